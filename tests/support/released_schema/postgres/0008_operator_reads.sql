-- convmem: an operator's reads across owners (`convmem threads list --all-owners`, and
-- `show`/`export`/`delete --all-owners`): every owner's live threads, most recently
-- updated first, and one live thread's header whoever owns it. Never reached by a
-- client's request: the server reads the caller's own threads only. Apply after 0007; on
-- Supabase, 0108 locks these functions.

-- No index of its own: every append would pay for it, and an operator's page may scan.
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

CREATE OR REPLACE FUNCTION convmem_find_any_owner(p_id uuid, p_now timestamptz)
RETURNS SETOF convmem_row LANGUAGE sql STABLE AS $$
    SELECT (convmem_header(t, NULL, NULL, NULL)).*
    FROM convmem_threads t
    WHERE t.id = p_id AND t.expires_at > p_now;
$$;

INSERT INTO convmem_schema_migrations (version, name) VALUES (8, '0008_operator_reads')
ON CONFLICT (version) DO NOTHING;
