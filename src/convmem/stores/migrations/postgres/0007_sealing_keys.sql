-- 0007: the encryption keys the database holds sealed data under (convmem_sealing_keys),
-- so a process without the key refuses to start.
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

INSERT INTO convmem_schema_migrations (version, name) VALUES (7, '0007_sealing_keys')
ON CONFLICT (version) DO NOTHING;
