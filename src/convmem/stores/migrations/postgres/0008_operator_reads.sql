-- 0008: an operator's reads across owners (convmem_list_every_owner,
-- convmem_find_any_owner); functions only (their bodies are in schema.sql).

INSERT INTO convmem_schema_migrations (version, name) VALUES (8, '0008_operator_reads')
ON CONFLICT (version) DO NOTHING;
