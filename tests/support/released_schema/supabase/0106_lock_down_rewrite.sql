-- convmem on Supabase: keep postgres/0006_rewrite.sql's function out of the public API's
-- reach, as 0102 does for the others. Apply after 0006; pasting it again is harmless.
SELECT convmem_lock_down();

INSERT INTO convmem_schema_migrations (version, name) VALUES (106, '0106_lock_down_rewrite')
ON CONFLICT (version) DO NOTHING;
