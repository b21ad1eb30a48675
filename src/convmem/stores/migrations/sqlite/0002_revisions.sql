-- Revisions (pop, clear, fork). `version` stays the thread's revision (every write raises
-- it), which until now was also its number of turns: `turn_count` takes over that role.
-- `rewritten_at` is the version of the last pop or clear (0: none), so a reader at a later
-- version knows the turns after it are appends only. `parent_seq` is a fork's cut: the
-- parent's turns up to it come first (NULL: all of them, as for a plain continuation).
ALTER TABLE convmem_threads ADD COLUMN turn_count INTEGER NOT NULL DEFAULT 0;
UPDATE convmem_threads SET turn_count = version;
ALTER TABLE convmem_threads ADD COLUMN rewritten_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE convmem_threads ADD COLUMN parent_seq INTEGER;
