-- 0001: the first schema: threads, turns and the migrations table.
--
-- The numbered files upgrade a database on an earlier schema, applied in order by
-- `convmem migrate`, which then re-creates every function from schema.sql (the function
-- bodies stand there only). A new database gets schema.sql instead; don't paste these.
CREATE TABLE IF NOT EXISTS convmem_schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS convmem_threads (
    id          uuid PRIMARY KEY,
    version     integer NOT NULL DEFAULT 0 CHECK (version >= 0),
    tool_name   text,
    parent_id   uuid,
    owner       text,
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS convmem_turns (
    thread_id       uuid NOT NULL REFERENCES convmem_threads (id) ON DELETE CASCADE,
    seq             integer NOT NULL CHECK (seq >= 1),
    role            text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content         text NOT NULL,
    tool_name       text,
    model_provider  text,
    model_name      text,
    files           jsonb NOT NULL DEFAULT '[]'::jsonb,
    images          jsonb NOT NULL DEFAULT '[]'::jsonb,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    key             text,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (thread_id, seq)
);

CREATE UNIQUE INDEX IF NOT EXISTS convmem_turns_key
    ON convmem_turns (thread_id, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS convmem_threads_listing
    ON convmem_threads (owner, updated_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS convmem_threads_expiry ON convmem_threads (expires_at);

INSERT INTO convmem_schema_migrations (version, name) VALUES (1, '0001_init')
ON CONFLICT (version) DO NOTHING;
