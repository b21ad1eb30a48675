-- 0106: 0006's function locked down.

INSERT INTO convmem_schema_migrations (version, name) VALUES (106, '0106_lock_down_rewrite')
ON CONFLICT (version) DO NOTHING;
