-- The encryption keys this database holds sealed data under (see postgres/0007): a
-- process without a key, or with the wrong one, refuses to start.
CREATE TABLE convmem_sealing_keys (
    key_id      TEXT PRIMARY KEY,
    recorded_at INTEGER NOT NULL
) STRICT;

-- Threads sealed before this table existed name their key in their sealed metadata.
INSERT OR IGNORE INTO convmem_sealing_keys (key_id, recorded_at)
SELECT DISTINCT substr(json_extract(metadata, '$.cm1'), 1, instr(json_extract(metadata, '$.cm1'), '.') - 1), 0
FROM convmem_threads
WHERE json_type(metadata, '$.cm1') = 'text'
  AND (SELECT count(*) FROM json_each(convmem_threads.metadata)) = 1
  AND instr(json_extract(metadata, '$.cm1'), '.') > 1;
