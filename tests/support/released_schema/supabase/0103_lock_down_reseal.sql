-- convmem on Supabase: keep the functions of postgres/0003_reseal.sql (key rotation) out
-- of the public API's reach, as 0102 does for the others. Apply after 0003; pasting it
-- again is harmless.
SELECT convmem_lock_down();

INSERT INTO convmem_schema_migrations (version, name) VALUES (103, '0103_lock_down_reseal')
ON CONFLICT (version) DO NOTHING;
