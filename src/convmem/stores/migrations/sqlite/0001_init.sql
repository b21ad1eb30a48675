-- convmem schema for SQLite. Times are integer microseconds since the epoch (UTC);
-- JSON columns hold text written by orjson.
CREATE TABLE convmem_threads (
    id          TEXT PRIMARY KEY,
    version     INTEGER NOT NULL DEFAULT 0,
    tool_name   TEXT,
    parent_id   TEXT,
    owner       TEXT,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE convmem_turns (
    thread_id       TEXT NOT NULL REFERENCES convmem_threads (id) ON DELETE CASCADE,
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
    PRIMARY KEY (thread_id, seq)
) STRICT, WITHOUT ROWID;

CREATE UNIQUE INDEX convmem_turns_key ON convmem_turns (thread_id, key) WHERE key IS NOT NULL;
CREATE INDEX convmem_threads_listing ON convmem_threads (owner, updated_at DESC, id DESC);
CREATE INDEX convmem_threads_expiry ON convmem_threads (expires_at);
