-- 0011: restore (convmem_restore), a thread written exactly as another store held it, for
-- `convmem copy`; a function only (its body is in schema.sql).

INSERT INTO convmem_schema_migrations (version, name) VALUES (11, '0011_restore')
ON CONFLICT (version) DO NOTHING;
