-- convmem for Supabase: the REST (PostgREST) side. Apply after postgres/0001_init.sql,
-- with `convmem migrate --store "postgresql://…?migrations=supabase"` or by pasting both
-- files, in order, into Supabase's SQL editor.
--
-- Every store call is one RPC: one HTTP request, one transaction. Writes carry a request
-- id; the result of a committed request is kept, so a retry after a dropped connection
-- returns it instead of writing again.

CREATE TABLE IF NOT EXISTS convmem_rpc_requests (
    request_id  uuid PRIMARY KEY,
    thread_id   uuid NOT NULL REFERENCES convmem_threads (id) ON DELETE CASCADE,
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS convmem_rpc_requests_thread ON convmem_rpc_requests (thread_id);

-- A turn as JSON, the same shape for every function.
CREATE OR REPLACE FUNCTION convmem_turn_json(t convmem_turns) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_jsonb(t) - 'thread_id'
$$;

CREATE OR REPLACE FUNCTION convmem_header_json(th convmem_threads) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_jsonb(th)
$$;

-- The thread (header and turns after p_since), or null if missing, expired or not p_owner's.
CREATE OR REPLACE FUNCTION convmem_load(p_id uuid, p_owner text, p_since integer, p_now timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'thread', convmem_header_json(th),
        'turns', coalesce(
            (SELECT jsonb_agg(convmem_turn_json(tu) ORDER BY tu.seq)
               FROM convmem_turns tu WHERE tu.thread_id = th.id AND tu.seq > p_since),
            '[]'::jsonb))
    FROM convmem_threads th
    WHERE th.id = p_id AND th.owner IS NOT DISTINCT FROM p_owner AND th.expires_at > p_now
$$;

CREATE OR REPLACE FUNCTION convmem_create(
    p_request_id uuid, p_id uuid, p_tool_name text, p_parent_id uuid, p_owner text,
    p_metadata jsonb, p_turns jsonb, p_now timestamptz, p_ttl_seconds double precision,
    p_max_turns integer)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_done jsonb;
    v_count integer := jsonb_array_length(p_turns);
    v_result jsonb;
BEGIN
    SELECT result INTO v_done FROM convmem_rpc_requests WHERE request_id = p_request_id;
    IF FOUND THEN
        RETURN v_done;  -- a retry of a create that committed
    END IF;
    IF v_count > p_max_turns THEN
        RAISE EXCEPTION 'a thread holds at most % turns; % were given', p_max_turns, v_count
            USING ERRCODE = 'CM413';
    END IF;
    INSERT INTO convmem_threads
        (id, version, tool_name, parent_id, owner, metadata, created_at, updated_at, expires_at)
    VALUES (p_id, v_count, p_tool_name, p_parent_id, p_owner, coalesce(p_metadata, '{}'),
            p_now, p_now, p_now + make_interval(secs => p_ttl_seconds));
    INSERT INTO convmem_turns
        (thread_id, seq, role, content, tool_name, model_provider, model_name,
         files, images, metadata, key, created_at)
    SELECT p_id, x.ord, x.role, x.content, x.tool_name, x.model_provider, x.model_name,
           coalesce(x.files, '[]'), coalesce(x.images, '[]'), coalesce(x.metadata, '{}'), x.key, p_now
    FROM jsonb_to_recordset(p_turns) AS x(
        ord integer, role text, content text, tool_name text, model_provider text,
        model_name text, files jsonb, images jsonb, metadata jsonb, key text);
    v_result := convmem_load(p_id, p_owner, 0, p_now);
    INSERT INTO convmem_rpc_requests VALUES (p_request_id, p_id, v_result, p_now);
    RETURN v_result;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'a thread with id % already exists', p_id USING ERRCODE = 'CM422';
END
$$;

CREATE OR REPLACE FUNCTION convmem_append(
    p_request_id uuid, p_id uuid, p_owner text, p_turns jsonb, p_now timestamptz,
    p_ttl_seconds double precision, p_max_turns integer)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_done jsonb;
    v_version integer;
    v_expires timestamptz;
    v_conflict text;
    v_fresh integer;
    v_result jsonb;
BEGIN
    -- The row lock serialises appends to one thread; every statement below then sees
    -- the turns committed before it (READ COMMITTED takes a snapshot per statement).
    SELECT version, expires_at INTO v_version, v_expires FROM convmem_threads
    WHERE id = p_id AND owner IS NOT DISTINCT FROM p_owner FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no thread %', p_id USING ERRCODE = 'CM404';
    END IF;
    SELECT result INTO v_done FROM convmem_rpc_requests WHERE request_id = p_request_id;
    IF FOUND THEN
        RETURN v_done;  -- a retry of an append that committed
    END IF;
    IF v_expires <= p_now THEN
        RAISE EXCEPTION 'thread % has expired', p_id USING ERRCODE = 'CM410';
    END IF;
    SELECT i.key INTO v_conflict
    FROM jsonb_to_recordset(p_turns) AS i(key text, role text, content text)
    JOIN convmem_turns t ON t.thread_id = p_id AND t.key = i.key
    WHERE t.role <> i.role OR t.content <> i.content LIMIT 1;
    IF v_conflict IS NOT NULL THEN
        RAISE EXCEPTION 'turn key % is already used in thread % by another turn', v_conflict, p_id
            USING ERRCODE = 'CM409';
    END IF;
    -- Turns whose key is already stored are a keyed retry: they are not inserted again.
    SELECT count(*) INTO v_fresh
    FROM jsonb_to_recordset(p_turns) AS i(key text)
    WHERE i.key IS NULL
       OR NOT EXISTS (SELECT 1 FROM convmem_turns t WHERE t.thread_id = p_id AND t.key = i.key);
    IF v_version + v_fresh > p_max_turns THEN
        RAISE EXCEPTION 'thread % has % of at most % turns; % more do not fit',
            p_id, v_version, p_max_turns, v_fresh USING ERRCODE = 'CM413';
    END IF;
    INSERT INTO convmem_turns
        (thread_id, seq, role, content, tool_name, model_provider, model_name,
         files, images, metadata, key, created_at)
    SELECT p_id, v_version + row_number() OVER (ORDER BY x.ord), x.role, x.content,
           x.tool_name, x.model_provider, x.model_name, coalesce(x.files, '[]'),
           coalesce(x.images, '[]'), coalesce(x.metadata, '{}'), x.key, p_now
    FROM jsonb_to_recordset(p_turns) AS x(
        ord integer, role text, content text, tool_name text, model_provider text,
        model_name text, files jsonb, images jsonb, metadata jsonb, key text)
    WHERE x.key IS NULL
       OR NOT EXISTS (SELECT 1 FROM convmem_turns t WHERE t.thread_id = p_id AND t.key = x.key);
    UPDATE convmem_threads
    SET version = v_version + v_fresh, updated_at = p_now,
        expires_at = p_now + make_interval(secs => p_ttl_seconds)
    WHERE id = p_id;
    SELECT jsonb_build_object(
        'version', v_version + v_fresh,
        'inserted', v_fresh,
        'updated_at', p_now,
        'expires_at', p_now + make_interval(secs => p_ttl_seconds),
        'turns', coalesce(jsonb_agg(convmem_turn_json(t) ORDER BY t.seq), '[]'::jsonb))
    INTO v_result
    FROM convmem_turns t
    WHERE t.thread_id = p_id AND (t.seq > v_version OR t.key IN (
        SELECT x.key FROM jsonb_to_recordset(p_turns) AS x(key text) WHERE x.key IS NOT NULL));
    INSERT INTO convmem_rpc_requests VALUES (p_request_id, p_id, v_result, p_now);
    RETURN v_result;
END
$$;

CREATE OR REPLACE FUNCTION convmem_list(
    p_owner text, p_now timestamptz, p_limit integer, p_after_at timestamptz, p_after_id uuid)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(convmem_header_json(th) ORDER BY th.updated_at DESC, th.id DESC), '[]')
    FROM (
        SELECT * FROM convmem_threads
        WHERE owner IS NOT DISTINCT FROM p_owner AND expires_at > p_now
          AND (p_after_at IS NULL OR (updated_at, id) < (p_after_at, p_after_id))
        ORDER BY updated_at DESC, id DESC
        LIMIT p_limit
    ) th
$$;

CREATE OR REPLACE FUNCTION convmem_delete(p_id uuid, p_owner text)
RETURNS boolean LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM convmem_threads WHERE id = p_id AND owner IS NOT DISTINCT FROM p_owner
        RETURNING 1
    )
    SELECT count(*) > 0 FROM gone
$$;

CREATE OR REPLACE FUNCTION convmem_purge(p_now timestamptz)
RETURNS integer LANGUAGE sql AS $$
    WITH gone AS (DELETE FROM convmem_threads WHERE expires_at <= p_now RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

CREATE OR REPLACE FUNCTION convmem_ping() RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT max(version) FROM convmem_schema_migrations
$$;

-- Row-level security: only the service role (the server's key) reaches conversations;
-- the anon and authenticated roles of Supabase's public API see nothing.
ALTER TABLE convmem_threads ENABLE ROW LEVEL SECURITY;
ALTER TABLE convmem_turns ENABLE ROW LEVEL SECURITY;
ALTER TABLE convmem_rpc_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE convmem_schema_migrations ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS convmem_service_role ON convmem_threads;
CREATE POLICY convmem_service_role ON convmem_threads FOR ALL TO service_role USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS convmem_service_role ON convmem_turns;
CREATE POLICY convmem_service_role ON convmem_turns FOR ALL TO service_role USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS convmem_service_role ON convmem_rpc_requests;
CREATE POLICY convmem_service_role ON convmem_rpc_requests FOR ALL TO service_role USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS convmem_service_role ON convmem_schema_migrations;
CREATE POLICY convmem_service_role ON convmem_schema_migrations FOR SELECT TO service_role USING (true);

REVOKE ALL ON convmem_threads, convmem_turns, convmem_rpc_requests, convmem_schema_migrations
    FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON convmem_threads, convmem_turns, convmem_rpc_requests
    TO service_role;
GRANT SELECT ON convmem_schema_migrations TO service_role;

REVOKE EXECUTE ON FUNCTION
    convmem_turn_json(convmem_turns), convmem_header_json(convmem_threads),
    convmem_load(uuid, text, integer, timestamptz),
    convmem_create(uuid, uuid, text, uuid, text, jsonb, jsonb, timestamptz, double precision, integer),
    convmem_append(uuid, uuid, text, jsonb, timestamptz, double precision, integer),
    convmem_list(text, timestamptz, integer, timestamptz, uuid),
    convmem_delete(uuid, text), convmem_purge(timestamptz), convmem_ping()
    FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION
    convmem_turn_json(convmem_turns), convmem_header_json(convmem_threads),
    convmem_load(uuid, text, integer, timestamptz),
    convmem_create(uuid, uuid, text, uuid, text, jsonb, jsonb, timestamptz, double precision, integer),
    convmem_append(uuid, uuid, text, jsonb, timestamptz, double precision, integer),
    convmem_list(text, timestamptz, integer, timestamptz, uuid),
    convmem_delete(uuid, text), convmem_purge(timestamptz), convmem_ping()
    TO service_role;
