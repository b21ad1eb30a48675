-- convmem: turns sealed for their seqs. With encryption at rest a turn's ciphertext binds
-- its seq (so a turn moved to another place fails authentication), so the writer says
-- which seq each turn was sealed for: `seq` in each element of p_turns. A new turn that
-- would land anywhere else (another write came first) refuses the whole call with CM428
-- and the thread's version in DETAIL; the writer seals the turns again for the seqs after
-- it and retries. Without `seq` (encryption off, or an older convmem) the functions number
-- turns as before. Only the bodies change (CREATE OR REPLACE keeps their grants); apply
-- after 0008; on Supabase, 0109 follows it.

-- As 0004's, with the seq check before the insert.
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

-- As 0006's, with the seq check before the insert.
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

INSERT INTO convmem_schema_migrations (version, name) VALUES (9, '0009_sealed_seqs')
ON CONFLICT (version) DO NOTHING;
