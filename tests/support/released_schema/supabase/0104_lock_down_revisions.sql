-- convmem on Supabase: keep the functions of postgres/0004_revisions.sql (pop, clear,
-- fork, and the re-created store calls) out of the public API's reach, as 0102 does for
-- the others. Apply after 0004; pasting it again is harmless.
SELECT convmem_lock_down();

INSERT INTO convmem_schema_migrations (version, name) VALUES (104, '0104_lock_down_revisions')
ON CONFLICT (version) DO NOTHING;
