-- convmem: compaction summaries. Apply after 0004_revisions.sql (paste it into the SQL
-- editor, or `convmem migrate`); on Supabase, 0105 locks the new table and function.
--
-- A thread has at most one summary, its newest, kept as a system turn would be (so it is
-- sealed and decoded like one): `seq` is the newest turn it covers, and it stands for
-- every turn up to that one, which all stay in convmem_turns. `version` is the thread
-- version its save committed. Saving one raises the thread's version by one and records
-- it in rewritten_at, so a reader whose copy is older gets the whole thread with it. A pop
-- or clear that removes a covered turn deletes the summary in the same statement.
--
-- Loads send the summary as one more row: the turn columns, with `version` set (a turn
-- row's is NULL). New refusal:
--   CM412  a summary made from a version the thread moved past by a pop, a clear or
--          another summary, or that covers no turn of it (DETAIL: the covered seq)

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

-- load and load_since, as in 0004, plus the summary row.
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

-- pop and clear, as in 0004, deleting a summary that covered a removed turn.
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

-- As 0003's, with rows marked `summary` rewriting the summary instead of a turn.
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

INSERT INTO convmem_schema_migrations (version, name) VALUES (5, '0005_summaries')
ON CONFLICT (version) DO NOTHING;
