-- convmem schema for PostgreSQL (direct, or behind PgBouncer / Supavisor) and Supabase.
-- Every migration file records itself in convmem_schema_migrations, so the files can be
-- pasted, in order, into Supabase's SQL editor (or run with psql -f), and a later
-- `convmem migrate` applies only what is newer.
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

-- Idempotency: a key appears at most once per thread (NULL keys are unconstrained).
CREATE UNIQUE INDEX IF NOT EXISTS convmem_turns_key
    ON convmem_turns (thread_id, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS convmem_threads_listing
    ON convmem_threads (owner, updated_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS convmem_threads_expiry ON convmem_threads (expires_at);

INSERT INTO convmem_schema_migrations (version, name) VALUES (1, '0001_init')
ON CONFLICT (version) DO NOTHING;
