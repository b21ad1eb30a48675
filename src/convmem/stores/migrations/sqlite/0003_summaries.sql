-- Compaction summaries: at most one per thread, the newest, kept as a system turn would be
-- (so it is sealed and decoded like one). `seq` is the newest turn it covers: it stands
-- for every turn up to that one, which all stay in convmem_turns. `version` is the thread
-- version its save committed. A pop or clear that removes a covered turn deletes it.
CREATE TABLE convmem_summaries (
    thread_id       TEXT PRIMARY KEY REFERENCES convmem_threads (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL CHECK (seq >= 1),
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content         TEXT NOT NULL,
    tool_name       TEXT,
    model_provider  TEXT,
    model_name      TEXT,
    files           TEXT NOT NULL DEFAULT '[]',
    images          TEXT NOT NULL DEFAULT '[]',
    metadata        TEXT NOT NULL DEFAULT '{}',
    key             TEXT,
    created_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL
) STRICT;
