-- 0104: 0004's functions locked down.

INSERT INTO convmem_schema_migrations (version, name) VALUES (104, '0104_lock_down_revisions')
ON CONFLICT (version) DO NOTHING;
