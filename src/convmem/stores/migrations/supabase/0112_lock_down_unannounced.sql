-- 0112: 0012's table and functions locked down.

INSERT INTO convmem_schema_migrations (version, name) VALUES (112, '0112_lock_down_unannounced')
ON CONFLICT (version) DO NOTHING;
