-- 0111: 0011's function locked down.

INSERT INTO convmem_schema_migrations (version, name) VALUES (111, '0111_lock_down_restore')
ON CONFLICT (version) DO NOTHING;
