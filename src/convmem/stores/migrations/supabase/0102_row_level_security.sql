-- 0102: Supabase's row-level security and grants (convmem_lock_down, in security.sql):
-- only the service role reaches convmem's tables and functions. Like every file here, an
-- upgrade step for `convmem migrate --store "postgresql://…?migrations=supabase"`, which
-- then applies security.sql again; a new project pastes schema.sql and security.sql.

INSERT INTO convmem_schema_migrations (version, name) VALUES (102, '0102_row_level_security')
ON CONFLICT (version) DO NOTHING;
