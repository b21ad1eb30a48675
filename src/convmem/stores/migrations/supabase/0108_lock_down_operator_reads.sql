-- 0108: 0008's functions locked down.

INSERT INTO convmem_schema_migrations (version, name) VALUES (108, '0108_lock_down_operator_reads')
ON CONFLICT (version) DO NOTHING;
