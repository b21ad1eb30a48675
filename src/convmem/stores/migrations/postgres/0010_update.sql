-- 0010: update (convmem_update), a thread's metadata replaced as one versioned write; a
-- function only (its body is in schema.sql).

INSERT INTO convmem_schema_migrations (version, name) VALUES (10, '0010_update')
ON CONFLICT (version) DO NOTHING;
