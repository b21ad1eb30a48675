-- convmem on Supabase: keep postgres/0007_sealing_keys.sql's table and function out of the
-- public API's reach, as 0102 does for the others. Apply after 0007; pasting it again is
-- harmless.
SELECT convmem_lock_down();

INSERT INTO convmem_schema_migrations (version, name) VALUES (107, '0107_lock_down_sealing_keys')
ON CONFLICT (version) DO NOTHING;
