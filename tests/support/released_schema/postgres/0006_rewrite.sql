-- convmem: rewrite — the turns after a seq replaced, atomically (what a caller that
-- keeps whole threads, such as pal-mcp-server, needs when its new value of a thread is
-- not an extension of the stored one). Apply after 0005_summaries.sql; on Supabase, 0106
-- locks the new function.
--
-- As a pop of the turns after p_after (0: all of them) and an append of p_turns, in one
-- statement: the version rises by one (recorded in rewritten_at), then by one per new
-- turn; a summary that covered a removed turn goes; p_metadata, when given, replaces the
-- thread's metadata; the expiry slides. Returns the whole thread, as convmem_load does.
-- Refusals: CM404, CM410, CM416 (p_after is not a turn), CM413 (the limit), CM409 (a new
-- turn's key is a kept turn's).

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

INSERT INTO convmem_schema_migrations (version, name) VALUES (6, '0006_rewrite')
ON CONFLICT (version) DO NOTHING;
