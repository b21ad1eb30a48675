-- convmem: update — a thread's metadata replaced (rename a conversation, tag it), as
-- one versioned write. Apply after 0009_sealed_seqs.sql; on Supabase, 0110 locks the
-- new function.
--
-- The version rises by one, recorded in rewritten_at (no turn takes that seq, so a
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

INSERT INTO convmem_schema_migrations (version, name) VALUES (10, '0010_update')
ON CONFLICT (version) DO NOTHING;
