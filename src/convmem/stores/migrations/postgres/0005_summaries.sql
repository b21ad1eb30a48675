-- 0005: compaction summaries (convmem_save_summary; loads return the summary as one more
-- row). A thread has at most one, its newest.
CREATE TABLE IF NOT EXISTS convmem_summaries (
    thread_id       uuid PRIMARY KEY REFERENCES convmem_threads (id) ON DELETE CASCADE,
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
    version         integer NOT NULL
);

INSERT INTO convmem_schema_migrations (version, name) VALUES (5, '0005_summaries')
ON CONFLICT (version) DO NOTHING;
