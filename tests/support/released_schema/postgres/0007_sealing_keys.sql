-- convmem: the encryption keys this database holds sealed data under, so that a process
-- without a key, or with the wrong one, refuses to start instead of serving ciphertext as
-- text or mixing plaintext into sealed threads (fails closed). A key id is the first
-- characters of a digest of the key (convmem.encryption.keys): it names the key, never
-- reveals it. Apply after 0006_rewrite.sql; on Supabase, 0107 locks the new function.
CREATE TABLE IF NOT EXISTS convmem_sealing_keys (
    key_id      text PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Threads sealed before this table existed name their key in their sealed metadata.
INSERT INTO convmem_sealing_keys (key_id)
SELECT DISTINCT split_part(metadata ->> 'cm1', '.', 1)
FROM convmem_threads
WHERE jsonb_typeof(metadata -> 'cm1') = 'string'
  AND position('.' IN metadata ->> 'cm1') > 1
  AND (SELECT count(*) FROM jsonb_object_keys(metadata)) = 1
ON CONFLICT (key_id) DO NOTHING;

-- Records p_current (the key a process seals with) when the database holds no sealed
-- data yet or holds some under one of p_known (a JSON array of the keys the process can
-- open); with p_only, after a complete rotation, forgets every other key. Returns the
-- recorded keys.
-- A process passes p_current NULL to only read them. Concurrent starts take turns.
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

INSERT INTO convmem_schema_migrations (version, name) VALUES (7, '0007_sealing_keys')
ON CONFLICT (version) DO NOTHING;
