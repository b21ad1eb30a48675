-- 0006: rewrite (convmem_rewrite), the turns after a seq replaced atomically; a function
-- only (its body is in schema.sql).

INSERT INTO convmem_schema_migrations (version, name) VALUES (6, '0006_rewrite')
ON CONFLICT (version) DO NOTHING;
