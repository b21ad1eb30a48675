-- Writes their writer could not announce through Redis (see postgres/schema.sql).
CREATE TABLE convmem_unannounced (
    thread_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    fenced_at   INTEGER,
    PRIMARY KEY (thread_id, version)
) STRICT;
CREATE INDEX convmem_unannounced_open ON convmem_unannounced (recorded_at) WHERE fenced_at IS NULL;
CREATE INDEX convmem_unannounced_fenced ON convmem_unannounced (fenced_at) WHERE fenced_at IS NOT NULL;
