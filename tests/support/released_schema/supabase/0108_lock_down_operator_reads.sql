-- convmem on Supabase: keep postgres/0008_operator_reads.sql's functions out of the public
-- API's reach, as 0102 does for the others. Apply after 0008; pasting it again is harmless.
SELECT convmem_lock_down();

INSERT INTO convmem_schema_migrations (version, name) VALUES (108, '0108_lock_down_operator_reads')
ON CONFLICT (version) DO NOTHING;
