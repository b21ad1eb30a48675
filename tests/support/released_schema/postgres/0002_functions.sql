-- convmem's store calls for PostgreSQL and Supabase: one SQL function per call.
--
-- PostgresStore calls each with one statement (`SELECT * FROM convmem_append(...)`), directly
-- or behind a transaction-mode pooler (PgBouncer, Supavisor); SupabaseStore calls the same
-- functions as one RPC each through Supabase's REST gateway (PostgREST). So the semantics of
-- every write (owner scoping, expiry, the turn limit, idempotency by key, seq numbers) are
-- written once, here. PL/pgSQL keeps each statement's plan for the life of the server
-- connection, so a call is not re-planned behind a pooler that turns prepared statements off.
--
-- Results are rows of `convmem_row`: a header row (seq IS NULL; tool_name, metadata and
-- created_at are the thread's) first, then one row per turn (the header-only columns NULL).
-- Refusals raise these SQLSTATEs; nothing is written when one is raised:
--   CM404  no such thread for this owner       CM410  the thread has expired
--   CM413  the thread is full (DETAIL: {"version": n, "fresh": k})
--   CM409  a turn key reused for another turn (DETAIL: the key)
--   CM422  a thread with this id already exists
-- Writes may carry a request id (SupabaseStore does): the result of a committed request is
-- kept, so an HTTP retry after a lost answer returns it instead of writing again.
--
-- Safe to run again: it drops and re-creates every function (and the functions of 0101).

CREATE TABLE IF NOT EXISTS convmem_schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS convmem_rpc_requests (
    request_id  uuid PRIMARY KEY,
    thread_id   uuid NOT NULL REFERENCES convmem_threads (id) ON DELETE CASCADE,
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS convmem_rpc_requests_thread ON convmem_rpc_requests (thread_id);
CREATE INDEX IF NOT EXISTS convmem_rpc_requests_age ON convmem_rpc_requests (created_at);

-- The first schema's REST functions (0101), then this file's own, so it can run twice.
DROP FUNCTION IF EXISTS convmem_load(uuid, text, integer, timestamptz);
DROP FUNCTION IF EXISTS convmem_create(uuid, uuid, text, uuid, text, jsonb, jsonb, timestamptz, double precision, integer);
DROP FUNCTION IF EXISTS convmem_append(uuid, uuid, text, jsonb, timestamptz, double precision, integer);
DROP FUNCTION IF EXISTS convmem_list(text, timestamptz, integer, timestamptz, uuid);
DROP FUNCTION IF EXISTS convmem_delete(uuid, text);
DROP FUNCTION IF EXISTS convmem_purge(timestamptz);
DROP FUNCTION IF EXISTS convmem_ping();
DROP FUNCTION IF EXISTS convmem_turn_json(convmem_turns);
DROP FUNCTION IF EXISTS convmem_header_json(convmem_threads);
DROP FUNCTION IF EXISTS convmem_create(uuid, text, uuid, text, jsonb, jsonb, timestamptz, double precision, integer, uuid);
DROP FUNCTION IF EXISTS convmem_append(uuid, text, jsonb, timestamptz, double precision, integer, uuid);
DROP FUNCTION IF EXISTS convmem_appended(uuid, integer, integer, convmem_turns[], timestamptz, timestamptz);
DROP FUNCTION IF EXISTS convmem_schema_version();
DROP TYPE IF EXISTS convmem_row CASCADE;  -- and any function of an older draft returning it

CREATE TYPE convmem_row AS (
    -- a turn's columns; on the header row: tool_name, metadata and created_at of the thread
    seq             integer,
    role            text,
    content         text,
    tool_name       text,
    model_provider  text,
    model_name      text,
    files           jsonb,
    images          jsonb,
    metadata        jsonb,
    key             text,
    created_at      timestamptz,
    -- the header row's own columns
    id              text,
    version         integer,
    parent_id       text,
    owner           text,
    updated_at      timestamptz,
    expires_at      timestamptz,
    inserted        integer   -- appends only: how many turns this call inserted
);

-- load and load_since: the header and the turns after p_since, in one snapshot.
CREATE FUNCTION convmem_load(p_id uuid, p_owner text, p_since integer, p_now timestamptz)
RETURNS SETOF convmem_row LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    WITH th AS (
        SELECT t.* FROM convmem_threads t
        WHERE t.id = p_id AND t.owner IS NOT DISTINCT FROM p_owner AND t.expires_at > p_now
    )
    SELECT NULL::integer, NULL::text, NULL::text, th.tool_name, NULL::text, NULL::text,
           NULL::jsonb, NULL::jsonb, th.metadata, NULL::text, th.created_at,
           th.id::text, th.version, th.parent_id::text, th.owner, th.updated_at, th.expires_at,
           NULL::integer
    FROM th
    UNION ALL
    SELECT tu.seq, tu.role, tu.content, tu.tool_name, tu.model_provider, tu.model_name,
           tu.files, tu.images, tu.metadata, tu.key, tu.created_at,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM th JOIN convmem_turns tu ON tu.thread_id = th.id AND tu.seq > p_since
    ORDER BY 1 NULLS FIRST;
END
$$;

CREATE FUNCTION convmem_create(
    p_id uuid, p_tool_name text, p_parent_id uuid, p_owner text, p_metadata jsonb,
    p_turns jsonb, p_now timestamptz, p_ttl_seconds double precision, p_max_turns integer,
    p_request_id uuid DEFAULT NULL)
RETURNS SETOF convmem_row LANGUAGE plpgsql AS $$
DECLARE
    v_count integer := jsonb_array_length(p_turns);
    v_done jsonb;
    v_header convmem_row;
BEGIN
    IF p_request_id IS NOT NULL THEN
        SELECT r.result INTO v_done FROM convmem_rpc_requests r WHERE r.request_id = p_request_id;
        IF FOUND THEN  -- a retry of a create that committed
            RETURN QUERY SELECT * FROM jsonb_populate_recordset(NULL::convmem_row, v_done);
            RETURN;
        END IF;
    END IF;
    IF v_count > p_max_turns THEN
        RAISE EXCEPTION 'a thread holds at most % turns; % were given', p_max_turns, v_count
            USING ERRCODE = 'CM413', DETAIL = json_build_object('version', 0, 'fresh', v_count);
    END IF;
    INSERT INTO convmem_threads AS t
        (id, version, tool_name, parent_id, owner, metadata, created_at, updated_at, expires_at)
    VALUES (p_id, v_count, p_tool_name, p_parent_id, p_owner, coalesce(p_metadata, '{}'),
            p_now, p_now, p_now + make_interval(secs => p_ttl_seconds))
    ON CONFLICT (id) DO NOTHING
    RETURNING NULL::integer, NULL::text, NULL::text, t.tool_name, NULL::text, NULL::text,
              NULL::jsonb, NULL::jsonb, t.metadata, NULL::text, t.created_at,
              t.id::text, t.version, t.parent_id::text, t.owner, t.updated_at, t.expires_at,
              NULL::integer
    INTO v_header;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'a thread with id % already exists', p_id USING ERRCODE = 'CM422';
    END IF;
    INSERT INTO convmem_turns
        (thread_id, seq, role, content, tool_name, model_provider, model_name,
         files, images, metadata, key, created_at)
    SELECT p_id, x.ord, x.role, x.content, x.tool_name, x.model_provider, x.model_name,
           coalesce(x.files, '[]'), coalesce(x.images, '[]'), coalesce(x.metadata, '{}'),
           x.key, p_now
    FROM jsonb_to_recordset(p_turns) AS x(
        ord integer, role text, content text, tool_name text, model_provider text,
        model_name text, files jsonb, images jsonb, metadata jsonb, key text);
    IF p_request_id IS NOT NULL THEN
        INSERT INTO convmem_rpc_requests
        VALUES (p_request_id, p_id, jsonb_build_array(to_jsonb(v_header)), p_now);
    END IF;
    RETURN NEXT v_header;
END
$$;

-- What an append returns: its header row, then the stored turns of the keys it was given
-- (an idempotent retry's turns). The turns it inserted are not sent back: the caller has
-- them, and they hold seq version - inserted + 1 .. version, in the order they were given,
-- and created_at = updated_at. Nothing is read back, so the cost does not depend on the
-- thread's length, nor on the size of what was appended.
CREATE FUNCTION convmem_appended(
    p_id uuid, p_version integer, p_inserted integer, p_turns convmem_turns[],
    p_now timestamptz, p_expires timestamptz)
RETURNS SETOF convmem_row LANGUAGE sql IMMUTABLE AS $$
    SELECT NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
           NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, NULL::timestamptz,
           p_id::text, p_version, NULL::text, NULL::text, p_now, p_expires, p_inserted
    UNION ALL
    SELECT tu.seq, tu.role, tu.content, tu.tool_name, tu.model_provider, tu.model_name,
           tu.files, tu.images, tu.metadata, tu.key, tu.created_at,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM unnest(p_turns) AS tu
$$;

CREATE FUNCTION convmem_append(
    p_id uuid, p_owner text, p_turns jsonb, p_now timestamptz,
    p_ttl_seconds double precision, p_max_turns integer, p_request_id uuid DEFAULT NULL)
RETURNS SETOF convmem_row LANGUAGE plpgsql AS $$
DECLARE
    v_version integer;
    v_expires timestamptz;
    v_new_expires timestamptz := p_now + make_interval(secs => p_ttl_seconds);
    v_keys text[];
    v_conflict text;
    v_existing convmem_turns[] := '{}';
    v_fresh integer;
    v_done jsonb;
BEGIN
    -- The row lock serialises appends to one thread; every statement below then sees
    -- the turns committed before it (READ COMMITTED takes a snapshot per statement).
    -- Every statement finds rows by equality on an index, so its plan, custom or
    -- generic, costs the same on a thread of 10 turns and of 10,000.
    SELECT t.version, t.expires_at INTO v_version, v_expires FROM convmem_threads t
    WHERE t.id = p_id AND t.owner IS NOT DISTINCT FROM p_owner FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no thread %', p_id USING ERRCODE = 'CM404';
    END IF;
    IF p_request_id IS NOT NULL THEN
        SELECT r.result INTO v_done FROM convmem_rpc_requests r WHERE r.request_id = p_request_id;
        IF FOUND THEN  -- a retry of an append that committed
            RETURN QUERY SELECT * FROM jsonb_populate_recordset(NULL::convmem_row, v_done);
            RETURN;
        END IF;
    END IF;
    IF v_expires <= p_now THEN
        RAISE EXCEPTION 'thread % has expired', p_id USING ERRCODE = 'CM410';
    END IF;
    -- Keyed turns already stored are an idempotent retry, found through the unique
    -- (thread_id, key) index: the keys go to it as one array value (`= ANY (v_keys)` is
    -- an index condition, where a subquery would be a filter over the whole thread), and
    -- `key IS NOT NULL` is spelt out, which a generic plan cannot infer for that partial
    -- index. So the lookup costs the same on a thread of 10 turns and of 10,000.
    SELECT array_agg(x.key) INTO v_keys
    FROM jsonb_to_recordset(p_turns) AS x(key text) WHERE x.key IS NOT NULL;
    IF v_keys IS NOT NULL THEN
        SELECT coalesce(array_agg(tu), '{}') INTO v_existing
        FROM convmem_turns tu
        WHERE tu.thread_id = p_id AND tu.key IS NOT NULL AND tu.key = ANY (v_keys);
    END IF;
    IF cardinality(v_existing) > 0 THEN
        SELECT x.key INTO v_conflict
        FROM unnest(v_existing) AS tu
        JOIN jsonb_to_recordset(p_turns) AS x(key text, role text, content text)
          ON x.key = tu.key
        WHERE tu.role <> x.role OR tu.content <> x.content
        LIMIT 1;
        IF v_conflict IS NOT NULL THEN
            RAISE EXCEPTION 'turn key % is already used in thread % by another turn',
                v_conflict, p_id USING ERRCODE = 'CM409', DETAIL = v_conflict;
        END IF;
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
    WHERE x.key IS NULL OR cardinality(v_existing) = 0
       OR NOT (x.key = ANY (SELECT e.key FROM unnest(v_existing) AS e));
    GET DIAGNOSTICS v_fresh = ROW_COUNT;
    IF v_version + v_fresh > p_max_turns THEN  -- raising undoes the insert above
        RAISE EXCEPTION 'thread % has % of at most % turns; % more do not fit',
            p_id, v_version, p_max_turns, v_fresh
            USING ERRCODE = 'CM413',
                  DETAIL = json_build_object('version', v_version, 'fresh', v_fresh);
    END IF;
    UPDATE convmem_threads
    SET version = v_version + v_fresh, updated_at = p_now, expires_at = v_new_expires
    WHERE id = p_id;
    IF p_request_id IS NOT NULL THEN
        INSERT INTO convmem_rpc_requests
        SELECT p_request_id, p_id, jsonb_agg(to_jsonb(r)), p_now
        FROM convmem_appended(p_id, v_version + v_fresh, v_fresh, v_existing, p_now,
                              v_new_expires) r;
    END IF;
    RETURN QUERY SELECT * FROM convmem_appended(
        p_id, v_version + v_fresh, v_fresh, v_existing, p_now, v_new_expires);
END
$$;

-- A page of the owner's live threads (header rows), most recently updated first.
CREATE FUNCTION convmem_list(
    p_owner text, p_now timestamptz, p_limit integer, p_after_at timestamptz, p_after_id uuid)
RETURNS SETOF convmem_row LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_owner IS NULL THEN  -- `owner IS NULL` and `owner = x` use the listing index
        RETURN QUERY
        SELECT NULL::integer, NULL::text, NULL::text, t.tool_name, NULL::text, NULL::text,
               NULL::jsonb, NULL::jsonb, t.metadata, NULL::text, t.created_at,
               t.id::text, t.version, t.parent_id::text, t.owner, t.updated_at, t.expires_at,
               NULL::integer
        FROM convmem_threads t
        WHERE t.owner IS NULL AND t.expires_at > p_now
          AND (p_after_at IS NULL OR (t.updated_at, t.id) < (p_after_at, p_after_id))
        ORDER BY t.updated_at DESC, t.id DESC
        LIMIT p_limit;
    ELSE
        RETURN QUERY
        SELECT NULL::integer, NULL::text, NULL::text, t.tool_name, NULL::text, NULL::text,
               NULL::jsonb, NULL::jsonb, t.metadata, NULL::text, t.created_at,
               t.id::text, t.version, t.parent_id::text, t.owner, t.updated_at, t.expires_at,
               NULL::integer
        FROM convmem_threads t
        WHERE t.owner = p_owner AND t.expires_at > p_now
          AND (p_after_at IS NULL OR (t.updated_at, t.id) < (p_after_at, p_after_id))
        ORDER BY t.updated_at DESC, t.id DESC
        LIMIT p_limit;
    END IF;
END
$$;

CREATE FUNCTION convmem_delete(p_id uuid, p_owner text)
RETURNS boolean LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM convmem_threads WHERE id = p_id AND owner IS NOT DISTINCT FROM p_owner
        RETURNING 1
    )
    SELECT count(*) > 0 FROM gone
$$;

-- Expired threads, and request records older than a day (an HTTP retry comes within seconds).
CREATE FUNCTION convmem_purge(p_now timestamptz)
RETURNS integer LANGUAGE sql AS $$
    WITH requests AS (
        DELETE FROM convmem_rpc_requests WHERE created_at < p_now - interval '1 day'
    ),
    gone AS (DELETE FROM convmem_threads WHERE expires_at <= p_now RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

CREATE FUNCTION convmem_schema_version() RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT max(version) FROM convmem_schema_migrations
$$;

INSERT INTO convmem_schema_migrations (version, name) VALUES (2, '0002_functions')
ON CONFLICT (version) DO NOTHING;
