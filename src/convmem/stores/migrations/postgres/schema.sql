-- convmem's schema for PostgreSQL (direct, or behind PgBouncer / Supavisor) and Supabase:
-- the whole current schema of a new database, in one file. `convmem migrate` applies it to
-- an empty database; on Supabase, paste it into the project's SQL editor, then
-- supabase/security.sql (or run both with psql -f). A database on an earlier schema is
-- upgraded by `convmem migrate` (the numbered files beside this one), never by this file.
--
-- The store calls are SQL functions, one per call. PostgresStore calls each with one
-- statement (`SELECT * FROM convmem_append(...)`), directly or behind a transaction-mode
-- pooler; SupabaseStore calls the same functions as one RPC each through Supabase's REST
-- gateway (PostgREST). So the semantics of every write (owner scoping, expiry, the turn
-- limit, idempotency by key, seq numbers) are written once, here. PL/pgSQL keeps each
-- statement's plan for the life of the server connection, so a call is not re-planned
-- behind a pooler that turns prepared statements off.
--
-- A thread's `version` is its revision, the one order every cache uses: an append raises
-- it by the turns it inserts (they get seq version + 1 ..); a pop, a clear, a summary or
-- an update by one, recorded in `rewritten_at` (a rewrite too, then one per new turn), so
-- a seq is never reused and a reader whose copy is older than rewritten_at gets the whole
-- thread. `turn_count` is the
-- number of turns (the limit counts it); `parent_seq` is a fork's cut (NULL: all of the
-- parent's turns).
--
-- Results are rows of `convmem_row`: a header row (seq IS NULL; tool_name, metadata and
-- created_at are the thread's) first, then one row per turn (the header-only columns
-- NULL), and on loads the summary as one more row (a turn's columns, with `version` set).
-- Refusals raise these SQLSTATEs; nothing is written when one is raised:
--   CM404  no such thread for this owner       CM410  the thread has expired
--   CM413  the thread is full (DETAIL: {"version": n, "fresh": k})
--   CM409  a turn key reused for another turn (DETAIL: the key)
--   CM422  a thread with this id already exists
--   CM416  a fork or rewrite point that is not one of the thread's turns (DETAIL: the seq)
--   CM412  a summary made from a version the thread moved past by a pop, a clear or
--          another summary, or that covers no turn of it (DETAIL: the covered seq)
--   CM428  a turn sealed for a seq it would not land at (DETAIL: the thread's version)
--   CM419  an update made from a version the thread moved past (DETAIL: its version)
-- Writes may carry a request id (SupabaseStore does): the result of a committed request is
-- kept, so an HTTP retry after a lost answer returns it instead of writing again.
--
-- Changing this file: the tables and the type change only with a migration that makes the
-- same change to an existing database; a function changes here only (its body stands
-- nowhere else), with a new migration, which may hold nothing but its record, so that
-- `convmem migrate` re-creates the functions of upgraded databases. The tests compare a
-- fresh database with upgraded ones, catalog against catalog.

-- Pasting this file again on a current database changes nothing; on an older one it would
-- leave tables and functions out of step, so it refuses.
DO $$
BEGIN
    -- (nested: PL/pgSQL would plan the second test before the first has held)
    IF to_regclass('convmem_threads') IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM convmem_schema_migrations WHERE version = 12) THEN
            RAISE EXCEPTION 'this database holds an earlier convmem schema'
                USING HINT = 'upgrade it with `convmem migrate --store postgresql://…` (add '
                             '?migrations=supabase on Supabase); this file is for new databases';
        END IF;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS convmem_schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- The columns stand in the order upgrades leave them (a new column comes last).
CREATE TABLE IF NOT EXISTS convmem_threads (
    id            uuid PRIMARY KEY,
    version       integer NOT NULL DEFAULT 0 CHECK (version >= 0),
    tool_name     text,
    parent_id     uuid,
    owner         text,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    turn_count    integer NOT NULL DEFAULT 0,
    rewritten_at  integer NOT NULL DEFAULT 0,
    parent_seq    integer
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

-- The results of committed requests that carried an id (see above).
CREATE TABLE IF NOT EXISTS convmem_rpc_requests (
    request_id  uuid PRIMARY KEY,
    thread_id   uuid NOT NULL REFERENCES convmem_threads (id) ON DELETE CASCADE,
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS convmem_rpc_requests_thread ON convmem_rpc_requests (thread_id);
CREATE INDEX IF NOT EXISTS convmem_rpc_requests_age ON convmem_rpc_requests (created_at);

-- A thread has at most one summary, its newest, kept as a system turn would be (so it is
-- sealed and decoded like one): `seq` is the newest turn it covers, and it stands for
-- every turn up to that one, which all stay in convmem_turns. `version` is the thread
-- version its save committed. A pop or clear that removes a covered turn deletes it.
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

-- The encryption keys this database holds sealed data under, so that a process without a
-- key, or with the wrong one, refuses to start instead of serving ciphertext as text or
-- mixing plaintext into sealed threads (fails closed). A key id is the first characters
-- of a digest of the key (convmem.encryption.keys): it names the key, never reveals it.
CREATE TABLE IF NOT EXISTS convmem_sealing_keys (
    key_id      text PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Writes their writer could not announce through Redis (it was cut off from it while
-- others were not): every instance reads the ones not yet fenced, and those fenced lately,
-- a few times per lease, drops its copies older than them, and fences and announces them
-- through its own Redis (so the staleness bound holds under a partition). The version
-- is a bigint: a deletion's is 2^53.
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

-- convmem:calls begin: the row type and the functions of the store calls. They hold no
-- data: `convmem migrate` drops and re-creates them on an upgraded database.

-- The row every store call returns (see above).
DO $$
BEGIN
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
EXCEPTION WHEN duplicate_object THEN
    NULL;  -- pasted again
END
$$;


-- ---- Helpers of the calls below.

-- The header row of a thread.
CREATE OR REPLACE FUNCTION convmem_header(
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
CREATE OR REPLACE FUNCTION convmem_recorded(p_request_id uuid)
RETURNS SETOF convmem_row LANGUAGE sql STABLE AS $$
    SELECT x.* FROM convmem_rpc_requests r,
        jsonb_populate_recordset(NULL::convmem_row, r.result) AS x
    WHERE p_request_id IS NOT NULL AND r.request_id = p_request_id
$$;

-- What an append returns: its header row, then the stored turns of the keys it was given
-- (an idempotent retry's turns). The turns it inserted are not sent back: the caller has
-- them, and they hold seq version - inserted + 1 .. version, in the order they were given,
-- and created_at = updated_at. Nothing is read back, so the cost does not depend on the
-- thread's length, nor on the size of what was appended.
CREATE OR REPLACE FUNCTION convmem_appended(
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

-- ---- Reads.

-- load and load_since: the header, the turns appended after p_since and the summary row,
-- in one snapshot; every turn (whole) when a pop, a clear, a summary or an update came
-- after p_since.
CREATE OR REPLACE FUNCTION convmem_load(p_id uuid, p_owner text, p_since integer, p_now timestamptz)
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
    SELECT s.seq, s.role, s.content, s.tool_name, s.model_provider, s.model_name,
           s.files, s.images, s.metadata, s.key, s.created_at,
           NULL, s.version, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM th JOIN convmem_summaries s ON s.thread_id = p_id
    UNION ALL
    SELECT tu.seq, tu.role, tu.content, tu.tool_name, tu.model_provider, tu.model_name,
           tu.files, tu.images, tu.metadata, tu.key, tu.created_at,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM th JOIN convmem_turns tu
      ON tu.thread_id = p_id AND tu.seq > CASE WHEN th.whole THEN 0 ELSE p_since END
    ORDER BY 1 NULLS FIRST;
END
$$;

-- A page of the owner's live threads (header rows), most recently updated first.
CREATE OR REPLACE FUNCTION convmem_list(
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

-- An operator's read (`convmem threads list --all-owners`): every owner's live threads,
-- most recently updated first. Never reached by a client's request: the server reads the
-- caller's own threads only. No index of its own: every append would pay for it, and an
-- operator's page may scan.
CREATE OR REPLACE FUNCTION convmem_list_every_owner(
    p_now timestamptz, p_limit integer, p_after_at timestamptz, p_after_id uuid)
RETURNS SETOF convmem_row LANGUAGE sql STABLE AS $$
    SELECT (convmem_header(t, NULL, NULL, NULL)).*
    FROM convmem_threads t
    WHERE t.expires_at > p_now
      AND (p_after_at IS NULL OR (t.updated_at, t.id) < (p_after_at, p_after_id))
    ORDER BY t.updated_at DESC, t.id DESC
    LIMIT p_limit;
$$;

-- An operator's read (`show`/`export`/`delete --all-owners`): one live thread's header,
-- whoever owns it.
CREATE OR REPLACE FUNCTION convmem_find_any_owner(p_id uuid, p_now timestamptz)
RETURNS SETOF convmem_row LANGUAGE sql STABLE AS $$
    SELECT (convmem_header(t, NULL, NULL, NULL)).*
    FROM convmem_threads t
    WHERE t.id = p_id AND t.expires_at > p_now;
$$;

-- ---- Writes.

-- A new thread with its first turns. Refusals: CM422 (the id is taken), CM413 (the limit),
-- CM409 (a key given twice).
CREATE OR REPLACE FUNCTION convmem_create(
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

-- Turns appended after the newest: they get seq version + 1 .., the version rises by
-- their number, the limit counts turn_count, and a turn whose key the thread already holds
-- is not inserted again (its stored copy is returned). A turn that says which seq it was
-- sealed for (`seq`) and would land at another refuses the whole call with CM428 (DETAIL:
-- the thread's version): the writer seals again for the seqs after it and retries.
CREATE OR REPLACE FUNCTION convmem_append(
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
    IF p_turns->0 ? 'seq' THEN  -- sealed for these seqs: each new turn must land at its own
        IF EXISTS (
            SELECT 1 FROM (
                SELECT x.seq, row_number() OVER (ORDER BY x.ord) AS place
                FROM jsonb_to_recordset(p_turns) AS x(ord integer, seq integer, key text)
                WHERE x.key IS NULL OR cardinality(v_existing) = 0
                   OR NOT (x.key = ANY (SELECT e.key FROM unnest(v_existing) AS e))
            ) f
            WHERE f.seq IS DISTINCT FROM v_version + f.place
        ) THEN
            RAISE EXCEPTION 'thread % is at version %; the turns were sealed for other seqs',
                p_id, v_version USING ERRCODE = 'CM428', DETAIL = v_version::text;
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
-- pop, the removed turns; a summary that covered a removed turn goes with them. Nothing
-- removed changes nothing. Costs O(turns removed): the newest turns come from the primary
-- key's end.
CREATE OR REPLACE FUNCTION convmem_remove(
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
        DELETE FROM convmem_summaries s WHERE s.thread_id = p_id AND s.seq >= v_seqs[1];
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
CREATE OR REPLACE FUNCTION convmem_fork(
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

-- Keep p_summary (a turn's fields, as p_turns holds them) as the summary of the turns up
-- to p_covers, made from version p_base. Returns the header row at the new version; the
-- times stay (a summary is upkeep, not activity).
CREATE OR REPLACE FUNCTION convmem_save_summary(
    p_id uuid, p_owner text, p_summary jsonb, p_covers integer, p_base integer,
    p_now timestamptz, p_request_id uuid DEFAULT NULL)
RETURNS SETOF convmem_row LANGUAGE plpgsql AS $$
DECLARE
    v_thread convmem_threads;
    v_header convmem_row;
BEGIN
    SELECT t.* INTO v_thread FROM convmem_threads t
    WHERE t.id = p_id AND t.owner IS NOT DISTINCT FROM p_owner FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no thread %', p_id USING ERRCODE = 'CM404';
    END IF;
    RETURN QUERY SELECT * FROM convmem_recorded(p_request_id);
    IF FOUND THEN  -- a retry of a save that committed
        RETURN;
    END IF;
    IF v_thread.expires_at <= p_now THEN
        RAISE EXCEPTION 'thread % has expired', p_id USING ERRCODE = 'CM410';
    END IF;
    IF v_thread.rewritten_at > p_base OR p_base > v_thread.version OR p_covers > p_base
       OR NOT EXISTS (SELECT 1 FROM convmem_turns tu
                      WHERE tu.thread_id = p_id AND tu.seq = p_covers) THEN
        RAISE EXCEPTION 'thread % moved past version % or has no turn %', p_id, p_base, p_covers
            USING ERRCODE = 'CM412', DETAIL = p_covers::text;
    END IF;
    INSERT INTO convmem_summaries AS s
        (thread_id, seq, role, content, tool_name, model_provider, model_name, files, images,
         metadata, key, created_at, version)
    SELECT p_id, p_covers, x.role, x.content, x.tool_name, x.model_provider, x.model_name,
           coalesce(x.files, '[]'), coalesce(x.images, '[]'), coalesce(x.metadata, '{}'),
           x.key, p_now, v_thread.version + 1
    FROM jsonb_to_record(p_summary) AS x(
        role text, content text, tool_name text, model_provider text, model_name text,
        files jsonb, images jsonb, metadata jsonb, key text)
    ON CONFLICT (thread_id) DO UPDATE
    SET seq = excluded.seq, role = excluded.role, content = excluded.content,
        tool_name = excluded.tool_name, model_provider = excluded.model_provider,
        model_name = excluded.model_name, files = excluded.files, images = excluded.images,
        metadata = excluded.metadata, key = excluded.key, created_at = excluded.created_at,
        version = excluded.version;
    UPDATE convmem_threads
    SET version = v_thread.version + 1, rewritten_at = v_thread.version + 1
    WHERE id = p_id
    RETURNING * INTO v_thread;
    v_header := convmem_header(v_thread, NULL, NULL, NULL);
    IF p_request_id IS NOT NULL THEN
        INSERT INTO convmem_rpc_requests
        VALUES (p_request_id, p_id, jsonb_build_array(to_jsonb(v_header)), p_now);
    END IF;
    RETURN NEXT v_header;
END
$$;

-- rewrite: the turns after p_after (0: all of them) replaced by p_turns, as a pop and an
-- append in one statement (what a caller that keeps whole threads, such as
-- pal-mcp-server, needs when its new value is not an extension of the stored one): the
-- version rises by one (recorded in rewritten_at), then by one per new turn; a summary
-- that covered a removed turn goes; p_metadata, when given, replaces the thread's
-- metadata; the expiry slides. Returns the whole thread, as convmem_load does. New turns
-- sealed for their seqs are checked as convmem_append checks them. Refusals: CM404,
-- CM410, CM416 (p_after is not a turn), CM413 (the limit), CM409 (a new turn's key is a
-- kept turn's), CM428.
CREATE OR REPLACE FUNCTION convmem_rewrite(
    p_id uuid, p_owner text, p_after integer, p_turns jsonb, p_metadata jsonb,
    p_now timestamptz, p_ttl_seconds double precision, p_max_turns integer,
    p_request_id uuid DEFAULT NULL)
RETURNS SETOF convmem_row LANGUAGE plpgsql AS $$
DECLARE
    v_thread convmem_threads;
    v_removed integer;
    v_fresh integer := jsonb_array_length(p_turns);
    v_conflict text;
    v_result convmem_row[];
BEGIN
    SELECT t.* INTO v_thread FROM convmem_threads t
    WHERE t.id = p_id AND t.owner IS NOT DISTINCT FROM p_owner FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no thread %', p_id USING ERRCODE = 'CM404';
    END IF;
    RETURN QUERY SELECT * FROM convmem_recorded(p_request_id);
    IF FOUND THEN  -- a retry of a rewrite that committed
        RETURN;
    END IF;
    IF v_thread.expires_at <= p_now THEN
        RAISE EXCEPTION 'thread % has expired', p_id USING ERRCODE = 'CM410';
    END IF;
    IF p_after <> 0 AND NOT EXISTS (
        SELECT 1 FROM convmem_turns tu WHERE tu.thread_id = p_id AND tu.seq = p_after
    ) THEN
        RAISE EXCEPTION 'thread % has no turn %', p_id, p_after
            USING ERRCODE = 'CM416', DETAIL = p_after::text;
    END IF;
    DELETE FROM convmem_turns WHERE thread_id = p_id AND seq > p_after;
    GET DIAGNOSTICS v_removed = ROW_COUNT;
    DELETE FROM convmem_summaries WHERE thread_id = p_id AND seq > p_after;
    SELECT x.key INTO v_conflict
    FROM jsonb_to_recordset(p_turns) AS x(key text)
    JOIN convmem_turns tu ON tu.thread_id = p_id AND tu.key = x.key
    LIMIT 1;
    IF v_conflict IS NOT NULL THEN  -- raising undoes the deletes above
        RAISE EXCEPTION 'turn key % is already used in thread % by another turn',
            v_conflict, p_id USING ERRCODE = 'CM409', DETAIL = v_conflict;
    END IF;
    IF v_thread.turn_count - v_removed + v_fresh > p_max_turns THEN
        RAISE EXCEPTION 'thread % has % of at most % turns; % more do not fit',
            p_id, v_thread.turn_count - v_removed, p_max_turns, v_fresh
            USING ERRCODE = 'CM413', DETAIL = json_build_object(
                'version', v_thread.turn_count - v_removed, 'fresh', v_fresh);
    END IF;
    IF p_turns->0 ? 'seq' AND EXISTS (  -- sealed for these seqs: each must land at its own
        SELECT 1 FROM jsonb_to_recordset(p_turns) AS x(ord integer, seq integer)
        WHERE x.seq IS DISTINCT FROM v_thread.version + 1 + x.ord
    ) THEN
        RAISE EXCEPTION 'thread % is at version %; the turns were sealed for other seqs',
            p_id, v_thread.version USING ERRCODE = 'CM428', DETAIL = v_thread.version::text;
    END IF;
    INSERT INTO convmem_turns
        (thread_id, seq, role, content, tool_name, model_provider, model_name,
         files, images, metadata, key, created_at)
    SELECT p_id, v_thread.version + 1 + x.ord, x.role, x.content, x.tool_name,
           x.model_provider, x.model_name, coalesce(x.files, '[]'), coalesce(x.images, '[]'),
           coalesce(x.metadata, '{}'), x.key, p_now
    FROM jsonb_to_recordset(p_turns) AS x(
        ord integer, role text, content text, tool_name text, model_provider text,
        model_name text, files jsonb, images jsonb, metadata jsonb, key text);
    UPDATE convmem_threads
    SET version = v_thread.version + 1 + v_fresh, rewritten_at = v_thread.version + 1,
        turn_count = v_thread.turn_count - v_removed + v_fresh,
        metadata = coalesce(p_metadata, metadata), updated_at = p_now,
        expires_at = p_now + make_interval(secs => p_ttl_seconds)
    WHERE id = p_id;
    SELECT array_agg(r) INTO v_result FROM convmem_load(p_id, p_owner, 0, p_now) r;
    IF p_request_id IS NOT NULL THEN
        INSERT INTO convmem_rpc_requests VALUES (p_request_id, p_id, to_jsonb(v_result), p_now);
    END IF;
    RETURN QUERY SELECT * FROM unnest(v_result);
END
$$;

-- update: a thread's metadata replaced (rename a conversation, tag it), as one versioned
-- write. The version rises by one, recorded in rewritten_at (no turn takes that seq, so a
-- reader whose copy is older gets the whole thread with the new header); the turns, the
-- summary and the expiry stay; updated_at moves. With p_base (a caller that changed one
-- field of the metadata it read at that version), the write happens only if the thread
-- is still at p_base; otherwise it refuses with CM419 (DETAIL: the version it is at).
-- Returns the header, as convmem_save_summary does.
CREATE OR REPLACE FUNCTION convmem_update(
    p_id uuid, p_owner text, p_metadata jsonb, p_base integer, p_now timestamptz,
    p_request_id uuid DEFAULT NULL)
RETURNS SETOF convmem_row LANGUAGE plpgsql AS $$
DECLARE
    v_thread convmem_threads;
    v_header convmem_row;
BEGIN
    SELECT t.* INTO v_thread FROM convmem_threads t
    WHERE t.id = p_id AND t.owner IS NOT DISTINCT FROM p_owner FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no thread %', p_id USING ERRCODE = 'CM404';
    END IF;
    RETURN QUERY SELECT * FROM convmem_recorded(p_request_id);
    IF FOUND THEN  -- a retry of an update that committed
        RETURN;
    END IF;
    IF v_thread.expires_at <= p_now THEN
        RAISE EXCEPTION 'thread % has expired', p_id USING ERRCODE = 'CM410';
    END IF;
    IF p_base IS NOT NULL AND v_thread.version <> p_base THEN
        RAISE EXCEPTION 'thread % moved past version %', p_id, p_base
            USING ERRCODE = 'CM419', DETAIL = v_thread.version::text;
    END IF;
    UPDATE convmem_threads
    SET version = v_thread.version + 1, rewritten_at = v_thread.version + 1,
        metadata = p_metadata, updated_at = p_now
    WHERE id = p_id
    RETURNING * INTO v_thread;
    v_header := convmem_header(v_thread, NULL, NULL, NULL);
    IF p_request_id IS NOT NULL THEN
        INSERT INTO convmem_rpc_requests
        VALUES (p_request_id, p_id, jsonb_build_array(to_jsonb(v_header)), p_now);
    END IF;
    RETURN NEXT v_header;
END
$$;

-- A thread and everything of it (turns, summary, request records, by ON DELETE CASCADE).
CREATE OR REPLACE FUNCTION convmem_delete(p_id uuid, p_owner text)
RETURNS boolean LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM convmem_threads WHERE id = p_id AND owner IS NOT DISTINCT FROM p_owner
        RETURNING 1
    )
    SELECT count(*) > 0 FROM gone
$$;

-- ---- Upkeep: expiry, key rotation, the keys recorded, the schema's version.

-- Expired threads, and request records older than a day (an HTTP retry comes within seconds).
CREATE OR REPLACE FUNCTION convmem_purge(p_now timestamptz)
RETURNS integer LANGUAGE sql AS $$
    WITH requests AS (
        DELETE FROM convmem_rpc_requests WHERE created_at < p_now - interval '1 day'
    ),
    gone AS (DELETE FROM convmem_threads WHERE expires_at <= p_now RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

-- Key rotation (`convmem rotate-keys`): every thread's id and owner in id order after
-- p_after, whatever its owner or expiry: a JSON array of [id, owner] pairs (one round trip
-- per page).
CREATE OR REPLACE FUNCTION convmem_scan(p_after uuid, p_limit integer)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_array(t.id, t.owner) ORDER BY t.id), '[]'::jsonb)
    FROM (
        SELECT id, owner FROM convmem_threads
        WHERE p_after IS NULL OR id > p_after
        ORDER BY id
        LIMIT p_limit
    ) t
$$;

-- Key rotation: rewrites sealed payloads in place: each turn of p_turns (seq, expected
-- content, new columns; rows marked `summary` rewrite the summary instead) only where the
-- row still holds the expected content, and the thread's metadata only where it still
-- equals p_metadata_old. Turns never change otherwise, so a concurrent append, or another
-- rotation that got there first, is never overwritten. seq, role, key, timestamps and the
-- version stay as they are: the plaintext is the same. The thread's REST retry records
-- older than p_records_before go too: they hold rows as an append returned them, in clear
-- if written before encryption was turned on, and only a retry within seconds of its
-- request reads one. Returns how many rows changed.
CREATE OR REPLACE FUNCTION convmem_reseal(
    p_id uuid, p_turns jsonb, p_metadata_old jsonb, p_metadata_new jsonb,
    p_records_before timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_turns integer;
    v_summary integer;
    v_header integer := 0;
BEGIN
    UPDATE convmem_turns t
    SET content = x.content, tool_name = x.tool_name, model_provider = x.model_provider,
        model_name = x.model_name, files = coalesce(x.files, '[]'),
        images = coalesce(x.images, '[]'), metadata = coalesce(x.metadata, '{}')
    FROM jsonb_to_recordset(p_turns) AS x(
        seq integer, expected text, content text, tool_name text, model_provider text,
        model_name text, files jsonb, images jsonb, metadata jsonb, summary boolean)
    WHERE t.thread_id = p_id AND t.seq = x.seq AND t.content = x.expected
      AND x.summary IS NOT TRUE;
    GET DIAGNOSTICS v_turns = ROW_COUNT;
    UPDATE convmem_summaries s
    SET content = x.content, tool_name = x.tool_name, model_provider = x.model_provider,
        model_name = x.model_name, files = coalesce(x.files, '[]'),
        images = coalesce(x.images, '[]'), metadata = coalesce(x.metadata, '{}')
    FROM jsonb_to_recordset(p_turns) AS x(
        seq integer, expected text, content text, tool_name text, model_provider text,
        model_name text, files jsonb, images jsonb, metadata jsonb, summary boolean)
    WHERE s.thread_id = p_id AND s.seq = x.seq AND s.content = x.expected AND x.summary;
    GET DIAGNOSTICS v_summary = ROW_COUNT;
    IF p_metadata_new IS NOT NULL THEN
        UPDATE convmem_threads SET metadata = p_metadata_new
        WHERE id = p_id AND metadata = p_metadata_old;
        GET DIAGNOSTICS v_header = ROW_COUNT;
    END IF;
    DELETE FROM convmem_rpc_requests r
    WHERE r.thread_id = p_id AND r.created_at < p_records_before;
    RETURN v_turns + v_summary + v_header;
END
$$;

-- Encryption at rest: records p_current (the key a process seals with) when the database
-- holds no sealed data yet or holds some under one of p_known (a JSON array of the keys the
-- process can open); with p_only, after a complete rotation, forgets every other key.
-- Returns the recorded keys. A process passes p_current NULL to only read them. Concurrent
-- starts take turns.
CREATE OR REPLACE FUNCTION convmem_sealing_keys(p_current text, p_known jsonb, p_only boolean)
RETURNS text[] LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('convmem_sealing_keys'));
    IF p_current IS NOT NULL AND (
        NOT EXISTS (SELECT 1 FROM convmem_sealing_keys)
        OR EXISTS (
            SELECT 1 FROM convmem_sealing_keys
            WHERE key_id IN (SELECT jsonb_array_elements_text(p_known))
        )
    ) THEN
        INSERT INTO convmem_sealing_keys (key_id) VALUES (p_current)
        ON CONFLICT (key_id) DO NOTHING;
        IF p_only THEN
            DELETE FROM convmem_sealing_keys WHERE key_id <> p_current;
        END IF;
    END IF;
    RETURN ARRAY(SELECT key_id FROM convmem_sealing_keys ORDER BY key_id);
END
$$;

-- A thread written exactly as another store held it, for `convmem copy` (0011): its
-- version, times and expiry as given, its turns with their seqs and times, its summary
-- (p_summary: one turn object, or NULL) and its fork link. The version is recorded as a
-- rewrite's, so a reader with any older copy gets the thread whole and a summary made
-- from an older version is stale. False, writing nothing, when the id is taken; with
-- p_replace the thread there (and by cascade its turns) goes first.
CREATE OR REPLACE FUNCTION convmem_restore(
    p_id uuid, p_version integer, p_tool_name text, p_parent_id uuid, p_parent_seq integer,
    p_owner text, p_metadata jsonb, p_created_at timestamptz, p_updated_at timestamptz,
    p_expires_at timestamptz, p_turns jsonb, p_summary jsonb, p_replace boolean)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF p_replace THEN
        DELETE FROM convmem_threads WHERE id = p_id;
    END IF;
    INSERT INTO convmem_threads
        (id, version, turn_count, tool_name, parent_id, owner, metadata, created_at,
         updated_at, expires_at, rewritten_at, parent_seq)
    VALUES (p_id, p_version, jsonb_array_length(p_turns), p_tool_name, p_parent_id, p_owner,
            coalesce(p_metadata, '{}'), p_created_at, p_updated_at, p_expires_at, p_version,
            p_parent_seq)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO convmem_turns
        (thread_id, seq, role, content, tool_name, model_provider, model_name,
         files, images, metadata, key, created_at)
    SELECT p_id, x.seq, x.role, x.content, x.tool_name, x.model_provider, x.model_name,
           coalesce(x.files, '[]'), coalesce(x.images, '[]'), coalesce(x.metadata, '{}'),
           x.key, x.created_at
    FROM jsonb_to_recordset(p_turns) AS x(
        seq integer, role text, content text, tool_name text, model_provider text,
        model_name text, files jsonb, images jsonb, metadata jsonb, key text,
        created_at timestamptz);
    INSERT INTO convmem_summaries
        (thread_id, seq, role, content, tool_name, model_provider, model_name,
         files, images, metadata, key, created_at, version)
    SELECT p_id, x.seq, x.role, x.content, x.tool_name, x.model_provider, x.model_name,
           coalesce(x.files, '[]'), coalesce(x.images, '[]'), coalesce(x.metadata, '{}'),
           x.key, x.created_at, p_version
    FROM jsonb_to_record(p_summary) AS x(
        seq integer, role text, content text, tool_name text, model_provider text,
        model_name text, files jsonb, images jsonb, metadata jsonb, key text,
        created_at timestamptz)
    WHERE p_summary IS NOT NULL;
    RETURN true;
END
$$;

-- A committed write its writer could not announce (0012); rows fenced over an hour ago go.
-- (clock_timestamp(), not now(): the time of the call, whatever transaction it is in)
CREATE OR REPLACE FUNCTION convmem_record_unannounced(p_id uuid, p_version bigint)
RETURNS boolean LANGUAGE sql AS $$
    WITH old AS (
        DELETE FROM convmem_unannounced WHERE fenced_at < clock_timestamp() - interval '1 hour'
    )
    INSERT INTO convmem_unannounced (thread_id, version, recorded_at)
    VALUES (p_id, p_version, clock_timestamp())
    ON CONFLICT (thread_id, version) DO NOTHING
    RETURNING true
$$;

-- The unannounced writes not fenced yet, and those fenced within p_fenced_within seconds:
-- a JSON array of [id, version, fenced] (empty, and one index probe, while all is well).
CREATE OR REPLACE FUNCTION convmem_unannounced(p_fenced_within double precision)
RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_array(u.thread_id, u.version, u.fenced)), '[]'::jsonb)
    FROM (
        SELECT thread_id, version, false AS fenced FROM convmem_unannounced
        WHERE fenced_at IS NULL
        UNION ALL
        SELECT thread_id, version, true FROM convmem_unannounced
        WHERE fenced_at > clock_timestamp() - make_interval(secs => p_fenced_within)
    ) u
$$;

-- Unannounced writes an instance has fenced and announced through Redis.
CREATE OR REPLACE FUNCTION convmem_mark_fenced(p_rows jsonb)
RETURNS integer LANGUAGE sql AS $$
    WITH marked AS (
        UPDATE convmem_unannounced u SET fenced_at = clock_timestamp()
        FROM jsonb_to_recordset(p_rows) AS x(thread_id uuid, version bigint)
        WHERE u.thread_id = x.thread_id AND u.version = x.version AND u.fenced_at IS NULL
        RETURNING 1
    )
    SELECT count(*)::integer FROM marked
$$;

-- The oldest schema version whose convmem may still run on this schema (a store checks
-- it on a database migrated past the newest version it knows, as in a rollback): raise it
-- in a migration that changes what older releases rely on; one that only adds leaves it.
CREATE OR REPLACE FUNCTION convmem_readable_by() RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT 10
$$;

-- The newest migration recorded (SupabaseStore checks it before its first call).
CREATE OR REPLACE FUNCTION convmem_schema_version() RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT max(version) FROM convmem_schema_migrations
$$;

-- convmem:calls end

-- This schema is every PostgreSQL migration up to 0012.
INSERT INTO convmem_schema_migrations (version, name) VALUES
    (1, '0001_init'),
    (2, '0002_functions'),
    (3, '0003_reseal'),
    (4, '0004_revisions'),
    (5, '0005_summaries'),
    (6, '0006_rewrite'),
    (7, '0007_sealing_keys'),
    (8, '0008_operator_reads'),
    (9, '0009_sealed_seqs'),
    (10, '0010_update'),
    (11, '0011_restore'),
    (12, '0012_unannounced')
ON CONFLICT (version) DO NOTHING;
