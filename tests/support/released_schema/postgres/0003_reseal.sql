-- convmem: the maintenance calls of encryption key rotation (`convmem rotate-keys`).
-- Apply after 0002_functions.sql (paste it into the SQL editor, or `convmem migrate`).

-- Every thread's id and owner in id order after p_after, whatever its owner or expiry:
-- a JSON array of [id, owner] pairs (one round trip per page).
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

-- Rewrites sealed payloads in place: each turn of p_turns (seq, expected content, new
-- columns) only where the row still holds the expected content, and the thread's
-- metadata only where it still equals p_metadata_old. Turns never change otherwise, so a
-- concurrent append, or another rotation that got there first, is never overwritten.
-- seq, role, key, timestamps and the version stay as they are: the plaintext is the same.
-- The thread's REST retry records older than p_records_before go too: they hold rows as
-- an append returned them, in clear if written before encryption was turned on, and
-- only a retry within seconds of its request reads one. Returns how many rows changed.
CREATE OR REPLACE FUNCTION convmem_reseal(
    p_id uuid, p_turns jsonb, p_metadata_old jsonb, p_metadata_new jsonb,
    p_records_before timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_turns integer;
    v_header integer := 0;
BEGIN
    UPDATE convmem_turns t
    SET content = x.content, tool_name = x.tool_name, model_provider = x.model_provider,
        model_name = x.model_name, files = coalesce(x.files, '[]'),
        images = coalesce(x.images, '[]'), metadata = coalesce(x.metadata, '{}')
    FROM jsonb_to_recordset(p_turns) AS x(
        seq integer, expected text, content text, tool_name text, model_provider text,
        model_name text, files jsonb, images jsonb, metadata jsonb)
    WHERE t.thread_id = p_id AND t.seq = x.seq AND t.content = x.expected;
    GET DIAGNOSTICS v_turns = ROW_COUNT;
    IF p_metadata_new IS NOT NULL THEN
        UPDATE convmem_threads SET metadata = p_metadata_new
        WHERE id = p_id AND metadata = p_metadata_old;
        GET DIAGNOSTICS v_header = ROW_COUNT;
    END IF;
    DELETE FROM convmem_rpc_requests r
    WHERE r.thread_id = p_id AND r.created_at < p_records_before;
    RETURN v_turns + v_header;
END
$$;

INSERT INTO convmem_schema_migrations (version, name) VALUES (3, '0003_reseal')
ON CONFLICT (version) DO NOTHING;
