-- convmem on Supabase: postgres/0009_sealed_seqs.sql changed only function bodies, whose
-- grants stay as 0102 set them; this file records that 0009 is in place, so a convmem that
-- seals turns for their seqs never runs against functions that would ignore them. Apply
-- after 0009; pasting it again is harmless.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM convmem_schema_migrations WHERE version = 9) THEN
        RAISE EXCEPTION 'apply postgres/0009_sealed_seqs.sql before this file';
    END IF;
END
$$;

INSERT INTO convmem_schema_migrations (version, name) VALUES (109, '0109_sealed_seqs')
ON CONFLICT (version) DO NOTHING;
