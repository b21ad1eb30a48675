-- 0110: 0010's function locked down.

INSERT INTO convmem_schema_migrations (version, name) VALUES (110, '0110_lock_down_update')
ON CONFLICT (version) DO NOTHING;
