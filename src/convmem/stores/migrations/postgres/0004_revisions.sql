-- 0004: revisions — threads that can also shrink (pop, clear: convmem_remove) and forks
-- (convmem_fork). `version` stays the thread's revision; until now it was also the number
-- of turns, and `turn_count` takes over that role (the limit). `rewritten_at` is the
-- version of the last pop or clear; `parent_seq` a fork's cut. convmem_row gained four
-- header columns (schema.sql).
ALTER TABLE convmem_threads ADD COLUMN IF NOT EXISTS turn_count integer;
UPDATE convmem_threads SET turn_count = version WHERE turn_count IS NULL;
ALTER TABLE convmem_threads ALTER COLUMN turn_count SET DEFAULT 0;
ALTER TABLE convmem_threads ALTER COLUMN turn_count SET NOT NULL;
ALTER TABLE convmem_threads ADD COLUMN IF NOT EXISTS rewritten_at integer NOT NULL DEFAULT 0;
ALTER TABLE convmem_threads ADD COLUMN IF NOT EXISTS parent_seq integer;

INSERT INTO convmem_schema_migrations (version, name) VALUES (4, '0004_revisions')
ON CONFLICT (version) DO NOTHING;
