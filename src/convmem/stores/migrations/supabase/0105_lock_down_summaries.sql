-- 0105: 0005's table and function locked down.

INSERT INTO convmem_schema_migrations (version, name) VALUES (105, '0105_lock_down_summaries')
ON CONFLICT (version) DO NOTHING;
