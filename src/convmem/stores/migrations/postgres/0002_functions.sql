-- 0002: the store calls became SQL functions (one per call, for PostgresStore and
-- SupabaseStore alike), replacing the first schema's REST functions (0101), and the
-- results of requests that carry an id are kept for HTTP retries.
CREATE TABLE IF NOT EXISTS convmem_rpc_requests (
    request_id  uuid PRIMARY KEY,
    thread_id   uuid NOT NULL REFERENCES convmem_threads (id) ON DELETE CASCADE,
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS convmem_rpc_requests_thread ON convmem_rpc_requests (thread_id);
CREATE INDEX IF NOT EXISTS convmem_rpc_requests_age ON convmem_rpc_requests (created_at);

INSERT INTO convmem_schema_migrations (version, name) VALUES (2, '0002_functions')
ON CONFLICT (version) DO NOTHING;
