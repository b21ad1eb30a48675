-- 0103: 0003's functions locked down.

INSERT INTO convmem_schema_migrations (version, name) VALUES (103, '0103_lock_down_reseal')
ON CONFLICT (version) DO NOTHING;
