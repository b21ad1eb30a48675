-- 0109: 0009 is in place (SupabaseStore needs it before it seals turns for their seqs).

INSERT INTO convmem_schema_migrations (version, name) VALUES (109, '0109_sealed_seqs')
ON CONFLICT (version) DO NOTHING;
