-- convmem on Supabase: keep postgres/0010_update.sql's function out of the public API's
-- reach, as 0102 does for the others. Apply after 0010; pasting it again is harmless.
SELECT convmem_lock_down();

INSERT INTO convmem_schema_migrations (version, name) VALUES (110, '0110_lock_down_update')
ON CONFLICT (version) DO NOTHING;
