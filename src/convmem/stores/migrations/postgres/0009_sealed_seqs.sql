-- 0009: turns sealed for their seqs: convmem_append and convmem_rewrite refuse a turn that
-- would land at another seq than the one it was sealed for (CM428); function bodies only.

INSERT INTO convmem_schema_migrations (version, name) VALUES (9, '0009_sealed_seqs')
ON CONFLICT (version) DO NOTHING;
