-- 0012: writes their writer could not announce through Redis (convmem_unannounced), and
-- the functions that record, read and mark them (their bodies are in schema.sql).

CREATE TABLE IF NOT EXISTS convmem_unannounced (
    thread_id   uuid NOT NULL,
    version     bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    fenced_at   timestamptz,
    PRIMARY KEY (thread_id, version)
);
CREATE INDEX IF NOT EXISTS convmem_unannounced_open
    ON convmem_unannounced (recorded_at) WHERE fenced_at IS NULL;
CREATE INDEX IF NOT EXISTS convmem_unannounced_fenced
    ON convmem_unannounced (fenced_at) WHERE fenced_at IS NOT NULL;

INSERT INTO convmem_schema_migrations (version, name) VALUES (12, '0012_unannounced')
ON CONFLICT (version) DO NOTHING;
