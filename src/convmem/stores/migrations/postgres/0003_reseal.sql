-- 0003: the calls of encryption key rotation (convmem_scan, convmem_reseal); functions
-- only (their bodies are in schema.sql).

INSERT INTO convmem_schema_migrations (version, name) VALUES (3, '0003_reseal')
ON CONFLICT (version) DO NOTHING;
