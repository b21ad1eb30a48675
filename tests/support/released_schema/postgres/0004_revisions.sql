-- convmem: revisions — threads that can also shrink (pop, clear) and forks (a new thread
-- that starts with its parent's turns up to a cut). Apply after 0003_reseal.sql (paste it
-- into the SQL editor, or `convmem migrate`); on Supabase, 0104 locks the new functions.
--
-- `version` stays the thread's revision, the one order every cache uses: an append raises
-- it by the turns it inserts (they get seq version + 1 ..), a pop or a clear by one, so a
-- seq is never reused. Until now it was also the number of turns; `turn_count` takes over
-- that role (the limit). `rewritten_at` is the version of the last pop or clear: a reader
-- whose copy is at that version or later gets only the turns appended since, an older one
-- the whole thread. `parent_seq` is a fork's cut (NULL: all of the parent's turns).
--
-- convmem_row gains four header columns, so every function returning it is re-created
-- here, with 0002's semantics unless said otherwise. New refusal:
--   CM416  a fork point that is not one of the parent's turns (DETAIL: the seq)

ALTER TABLE convmem_threads ADD COLUMN IF NOT EXISTS turn_count integer;
UPDATE convmem_threads SET turn_count = version WHERE turn_count IS NULL;
ALTER TABLE convmem_threads ALTER COLUMN turn_count SET DEFAULT 0;
ALTER TABLE convmem_threads ALTER COLUMN turn_count SET NOT NULL;
ALTER TABLE convmem_threads ADD COLUMN IF NOT EXISTS rewritten_at integer NOT NULL DEFAULT 0;
ALTER TABLE convmem_threads ADD COLUMN IF NOT EXISTS parent_seq integer;

DROP TYPE IF EXISTS convmem_row CASCADE;  -- and every function returning it
DROP FUNCTION IF EXISTS convmem_header(convmem_threads, integer, boolean, integer[]);
DROP FUNCTION IF EXISTS convmem_recorded(uuid);

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
    inserted        integer,    -- appends only: how many turns this call inserted
    parent_seq      integer,    -- a fork's cut
    whole           boolean,    -- loads only: the turns are all of them, not those since
    removed         integer[],  -- pops and clears: the seqs this call removed
    turn_count      integer     -- how many turns the thread holds
);

-- The header row of a thread.
CREATE FUNCTION convmem_header(
    t convmem_threads, p_inserted integer, p_whole boolean, p_removed integer[])
RETURNS convmem_row LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(NULL::integer, NULL::text, NULL::text, t.tool_name, NULL::text, NULL::text,
               NULL::jsonb, NULL::jsonb, t.metadata, NULL::text, t.created_at,
               t.id::text, t.version, t.parent_id::text, t.owner, t.updated_at, t.expires_at,
               p_inserted, t.parent_seq, p_whole, p_removed, t.turn_count)::convmem_row
$$;

-- The rows a committed write returned, recorded under its request id (none: no such
-- request, or no id), so an HTTP retry after a lost answer gets them instead of writing
-- again.
CREATE FUNCTION convmem_recorded(p_request_id uuid)
RETURNS SETOF convmem_row LANGUAGE sql STABLE AS $$
    SELECT x.* FROM convmem_rpc_requests r,
        jsonb_populate_recordset(NULL::convmem_row, r.result) AS x
    WHERE p_request_id IS NOT NULL AND r.request_id = p_request_id
$$;

-- load and load_since: the header and the turns appended after p_since, in one snapshot;
-- every turn (whole) when a pop or clear came after p_since.
CREATE FUNCTION convmem_load(p_id uuid, p_owner text, p_since integer, p_now timestamptz)
RETURNS SETOF convmem_row LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    WITH th AS (
        SELECT t, (p_since < t.rewritten_at OR p_since > t.version) AS whole
        FROM convmem_threads t
        WHERE t.id = p_id AND t.owner IS NOT DISTINCT FROM p_owner AND t.expires_at > p_now
    )
    SELECT (convmem_header(th.t, NULL, th.whole, NULL)).* FROM th
    UNION ALL
    SELECT tu.seq, tu.role, tu.content, tu.tool_name, tu.model_provider, tu.model_name,
           tu.files, tu.images, tu.metadata, tu.key, tu.created_at,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM th JOIN convmem_turns tu
      ON tu.thread_id = p_id AND tu.seq > CASE WHEN th.whole THEN 0 ELSE p_since END
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
    v_thread convmem_threads;
    v_header convmem_row;
BEGIN
    RETURN QUERY SELECT * FROM convmem_recorded(p_request_id);
    IF FOUND THEN  -- a retry of a create that committed
        RETURN;
    END IF;
    IF v_count > p_max_turns THEN
        RAISE EXCEPTION 'a thread holds at most % turns; % were given', p_max_turns, v_count
            USING ERRCODE = 'CM413', DETAIL = json_build_object('version', 0, 'fresh', v_count);
    END IF;
    INSERT INTO convmem_threads AS t
        (id, version, turn_count, tool_name, parent_id, owner, metadata, created_at,
         updated_at, expires_at)
    VALUES (p_id, v_count, v_count, p_tool_name, p_parent_id, p_owner,
            coalesce(p_metadata, '{}'), p_now, p_now,
            p_now + make_interval(secs => p_ttl_seconds))
    ON CONFLICT (id) DO NOTHING
    RETURNING t.* INTO v_thread;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'a thread with id % already exists', p_id USING ERRCODE = 'CM422';
    END IF;
    v_header := convmem_header(v_thread, NULL, NULL, NULL);
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

-- What an append returns: as in 0002 (its header row, then the stored turns of the keys
-- it was given; the inserted turns are not sent back).
CREATE FUNCTION convmem_appended(
    p_id uuid, p_version integer, p_inserted integer, p_turns convmem_turns[],
    p_now timestamptz, p_expires timestamptz)
RETURNS SETOF convmem_row LANGUAGE sql IMMUTABLE AS $$
    SELECT NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
           NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, NULL::timestamptz,
           p_id::text, p_version, NULL::text, NULL::text, p_now, p_expires, p_inserted,
           NULL::integer, NULL::boolean, NULL::integer[], NULL::integer
    UNION ALL
    SELECT tu.seq, tu.role, tu.content, tu.tool_name, tu.model_provider, tu.model_name,
           tu.files, tu.images, tu.metadata, tu.key, tu.created_at,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM unnest(p_turns) AS tu
$$;

-- As 0002's, with the limit counted in turn_count (version is no longer the count).
CREATE FUNCTION convmem_append(
    p_id uuid, p_owner text, p_turns jsonb, p_now timestamptz,
    p_ttl_seconds double precision, p_max_turns integer, p_request_id uuid DEFAULT NULL)
RETURNS SETOF convmem_row LANGUAGE plpgsql AS $$
DECLARE
    v_version integer;
    v_count integer;
    v_expires timestamptz;
    v_new_expires timestamptz := p_now + make_interval(secs => p_ttl_seconds);
    v_keys text[];
    v_conflict text;
    v_existing convmem_turns[] := '{}';
    v_fresh integer;
BEGIN
    -- The row lock serialises writes to one thread (see 0002 for why every statement
    -- below costs the same on a thread of 10 turns and of 10,000).
    SELECT t.version, t.turn_count, t.expires_at INTO v_version, v_count, v_expires
    FROM convmem_threads t
    WHERE t.id = p_id AND t.owner IS NOT DISTINCT FROM p_owner FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no thread %', p_id USING ERRCODE = 'CM404';
    END IF;
    RETURN QUERY SELECT * FROM convmem_recorded(p_request_id);
    IF FOUND THEN  -- a retry of an append that committed
        RETURN;
    END IF;
    IF v_expires <= p_now THEN
        RAISE EXCEPTION 'thread % has expired', p_id USING ERRCODE = 'CM410';
    END IF;
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
    IF v_count + v_fresh > p_max_turns THEN  -- raising undoes the insert above
        RAISE EXCEPTION 'thread % has % of at most % turns; % more do not fit',
            p_id, v_count, p_max_turns, v_fresh
            USING ERRCODE = 'CM413',
                  DETAIL = json_build_object('version', v_count, 'fresh', v_fresh);
    END IF;
    UPDATE convmem_threads
    SET version = v_version + v_fresh, turn_count = v_count + v_fresh, updated_at = p_now,
        expires_at = v_new_expires
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

-- pop (p_count > 0: the newest p_count turns) and clear (p_count NULL: every turn). Returns
-- the header row (removed: the seqs removed, version raised by one if any were) and, for a
-- pop, the removed turns. Nothing removed changes nothing. Costs O(turns removed): the
-- newest turns come from the primary key's end.
CREATE FUNCTION convmem_remove(
    p_id uuid, p_owner text, p_count integer, p_now timestamptz,
    p_ttl_seconds double precision, p_request_id uuid DEFAULT NULL)
RETURNS SETOF convmem_row LANGUAGE plpgsql AS $$
DECLARE
    v_thread convmem_threads;
    v_gone convmem_turns[];
    v_seqs integer[];
    v_result convmem_row[];
BEGIN
    SELECT t.* INTO v_thread FROM convmem_threads t
    WHERE t.id = p_id AND t.owner IS NOT DISTINCT FROM p_owner FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no thread %', p_id USING ERRCODE = 'CM404';
    END IF;
    RETURN QUERY SELECT * FROM convmem_recorded(p_request_id);
    IF FOUND THEN  -- a retry of a pop or clear that committed: do not remove more
        RETURN;
    END IF;
    IF v_thread.expires_at <= p_now THEN
        RAISE EXCEPTION 'thread % has expired', p_id USING ERRCODE = 'CM410';
    END IF;
    IF p_count IS NULL THEN
        WITH gone AS (
            DELETE FROM convmem_turns WHERE thread_id = p_id RETURNING seq
        )
        SELECT coalesce(array_agg(seq ORDER BY seq), '{}') INTO v_seqs FROM gone;
        v_gone := '{}';
    ELSE
        WITH newest AS (
            SELECT tu.seq FROM convmem_turns tu
            WHERE tu.thread_id = p_id ORDER BY tu.seq DESC LIMIT p_count
        ), gone AS (
            DELETE FROM convmem_turns tu USING newest
            WHERE tu.thread_id = p_id AND tu.seq = newest.seq
            RETURNING tu.*
        )
        SELECT coalesce(array_agg(g ORDER BY g.seq), '{}'),
               coalesce(array_agg(g.seq ORDER BY g.seq), '{}')
        INTO v_gone, v_seqs FROM gone g;
    END IF;
    IF cardinality(v_seqs) > 0 THEN
        UPDATE convmem_threads
        SET version = v_thread.version + 1, rewritten_at = v_thread.version + 1,
            turn_count = v_thread.turn_count - cardinality(v_seqs), updated_at = p_now,
            expires_at = p_now + make_interval(secs => p_ttl_seconds)
        WHERE id = p_id
        RETURNING * INTO v_thread;
    END IF;
    SELECT array_agg(r) INTO v_result FROM (
        SELECT (convmem_header(v_thread, NULL, NULL, v_seqs)).*
        UNION ALL
        SELECT tu.seq, tu.role, tu.content, tu.tool_name, tu.model_provider, tu.model_name,
               tu.files, tu.images, tu.metadata, tu.key, tu.created_at,
               NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM unnest(v_gone) AS tu
    ) r;
    IF p_request_id IS NOT NULL THEN
        INSERT INTO convmem_rpc_requests VALUES (p_request_id, p_id, to_jsonb(v_result), p_now);
    END IF;
    RETURN QUERY SELECT * FROM unnest(v_result);
END
$$;

-- A fork: a new thread whose parent is p_parent_id (p_owner's, live), cut at p_at_seq
-- (NULL: the parent's newest turn; 0: none of its turns). Returns the new header row.
CREATE FUNCTION convmem_fork(
    p_id uuid, p_parent_id uuid, p_at_seq integer, p_tool_name text, p_owner text,
    p_metadata jsonb, p_now timestamptz, p_ttl_seconds double precision,
    p_request_id uuid DEFAULT NULL)
RETURNS SETOF convmem_row LANGUAGE plpgsql AS $$
DECLARE
    v_parent_expires timestamptz;
    v_cut integer := p_at_seq;
    v_thread convmem_threads;
    v_header convmem_row;
BEGIN
    RETURN QUERY SELECT * FROM convmem_recorded(p_request_id);
    IF FOUND THEN  -- a retry of a fork that committed
        RETURN;
    END IF;
    -- FOR SHARE: the parent cannot be popped or deleted under the cut while we take it.
    SELECT t.expires_at INTO v_parent_expires FROM convmem_threads t
    WHERE t.id = p_parent_id AND t.owner IS NOT DISTINCT FROM p_owner FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no thread %', p_parent_id USING ERRCODE = 'CM404';
    END IF;
    IF v_parent_expires <= p_now THEN
        RAISE EXCEPTION 'thread % has expired', p_parent_id USING ERRCODE = 'CM410';
    END IF;
    IF v_cut IS NULL THEN
        SELECT coalesce(max(tu.seq), 0) INTO v_cut FROM convmem_turns tu
        WHERE tu.thread_id = p_parent_id;
    ELSIF v_cut <> 0 AND NOT EXISTS (
        SELECT 1 FROM convmem_turns tu WHERE tu.thread_id = p_parent_id AND tu.seq = v_cut
    ) THEN
        RAISE EXCEPTION 'thread % has no turn %', p_parent_id, v_cut
            USING ERRCODE = 'CM416', DETAIL = v_cut::text;
    END IF;
    INSERT INTO convmem_threads AS t
        (id, version, turn_count, tool_name, parent_id, parent_seq, owner, metadata,
         created_at, updated_at, expires_at)
    VALUES (p_id, 0, 0, p_tool_name, p_parent_id, v_cut, p_owner, coalesce(p_metadata, '{}'),
            p_now, p_now, p_now + make_interval(secs => p_ttl_seconds))
    ON CONFLICT (id) DO NOTHING
    RETURNING t.* INTO v_thread;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'a thread with id % already exists', p_id USING ERRCODE = 'CM422';
    END IF;
    v_header := convmem_header(v_thread, NULL, NULL, NULL);
    IF p_request_id IS NOT NULL THEN
        INSERT INTO convmem_rpc_requests
        VALUES (p_request_id, p_id, jsonb_build_array(to_jsonb(v_header)), p_now);
    END IF;
    RETURN NEXT v_header;
END
$$;

-- A page of the owner's live threads (header rows), most recently updated first.
CREATE FUNCTION convmem_list(
    p_owner text, p_now timestamptz, p_limit integer, p_after_at timestamptz, p_after_id uuid)
RETURNS SETOF convmem_row LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_owner IS NULL THEN  -- `owner IS NULL` and `owner = x` use the listing index
        RETURN QUERY
        SELECT (convmem_header(t, NULL, NULL, NULL)).*
        FROM convmem_threads t
        WHERE t.owner IS NULL AND t.expires_at > p_now
          AND (p_after_at IS NULL OR (t.updated_at, t.id) < (p_after_at, p_after_id))
        ORDER BY t.updated_at DESC, t.id DESC
        LIMIT p_limit;
    ELSE
        RETURN QUERY
        SELECT (convmem_header(t, NULL, NULL, NULL)).*
        FROM convmem_threads t
        WHERE t.owner = p_owner AND t.expires_at > p_now
          AND (p_after_at IS NULL OR (t.updated_at, t.id) < (p_after_at, p_after_id))
        ORDER BY t.updated_at DESC, t.id DESC
        LIMIT p_limit;
    END IF;
END
$$;

INSERT INTO convmem_schema_migrations (version, name) VALUES (4, '0004_revisions')
ON CONFLICT (version) DO NOTHING;
