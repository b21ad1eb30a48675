-- 0107: 0007's table and function locked down.

INSERT INTO convmem_schema_migrations (version, name) VALUES (107, '0107_lock_down_sealing_keys')
ON CONFLICT (version) DO NOTHING;
