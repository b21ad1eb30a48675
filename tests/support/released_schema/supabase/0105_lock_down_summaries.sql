-- convmem on Supabase: keep the table and function of postgres/0005_summaries.sql out of
-- the public API's reach, as 0102 does for the others. Apply after 0005; pasting it again
-- is harmless.
SELECT convmem_lock_down();

INSERT INTO convmem_schema_migrations (version, name) VALUES (105, '0105_lock_down_summaries')
ON CONFLICT (version) DO NOTHING;
