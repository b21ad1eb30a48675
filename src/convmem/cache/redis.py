"""L2: threads in Redis, written only through Lua scripts that never go backwards.

Every write compares versions inside Redis, atomically:

- ``install`` (after a store read) replaces the cached copy only with a newer one,
  and never below a fence;
- ``apply`` (after a store commit) follows the change in place when the cached copy
  is exactly the writer's base version (an append adds the new turns, O(turns added));
  otherwise it fences the key at the new version, so a slow reader cannot re-install
  an older copy (which a plain delete would allow); a delete fences at a version no
  copy ever reaches.

Keys are hash-tagged, ``<prefix>{<id>}``, so one thread's key lives in one
Redis Cluster slot (the scripts touch one key each); the client has short timeouts
and no retries, because the circuit breaker above it decides when to try again. A
single server or a cluster (``redis+cluster://``): see ``redis_connection``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from itertools import chain
from typing import TYPE_CHECKING, Any, Final, Self, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from convmem.cache.codec import (
    UNTAGGED,
    decode_thread,
    encode_header,
    encode_summary,
    encode_turns,
    fence_of,
    header_tag,
    state_tag,
)
from convmem.cache.protocol import (
    CorruptPayload,
    L2Error,
    WriteOutcome,
)
from convmem.cache.redis_bus import HEARTBEAT_SECONDS, SILENCE_LIMIT_SECONDS, RedisBus, announcement
from convmem.cache.redis_claims import RedisClaims
from convmem.cache.redis_connection import Client, connect, translated
from convmem.changes import Appended, Created, Deleted, Moved, Removed, Replaced, Updated
from convmem.limits import REDIS_MAX_CONNECTIONS
from convmem.records import to_micros

log = logging.getLogger("convmem.cache")


if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from convmem.cache.tags import CacheTags
    from convmem.changes import Change, CopyState, InPlace
    from convmem.models import Thread

# KEYS[1]; ARGV: version, ttl_ms, header, updated_us, expires_us, summary ('' for none),
# header tag, state tag, then seq, turn, seq, turn...
_INSTALL: Final = """
local v = tonumber(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'v', 'f')
local cv, cf = tonumber(cur[1]), tonumber(cur[2])
if (cf and v < cf) or (cv and cv >= v) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'h', ARGV[3], 'u', ARGV[4], 'e', ARGV[5],
           'a', ARGV[7], 't', ARGV[8], 'n', tostring((#ARGV - 8) / 2))
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 's', ARGV[6]) end
local batch = {}
for i = 9, #ARGV do
  batch[#batch + 1] = ARGV[i]
  if #batch >= 400 then redis.call('HSET', KEYS[1], unpack(batch)); batch = {} end
end
if #batch > 0 then redis.call('HSET', KEYS[1], unpack(batch)) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# The writes that follow a commit announce it in the same round trip: given a channel
# (ARGV[6]), they PUBLISH the message (ARGV[7]) on it, whatever they did to the copy. A
# Redis Cluster passes none: its sharded channel lives in another slot than the thread's
# key, so the cache publishes there apart (see RedisCache._write).
#
# ARGV[8] is the tag of the state the write leaves ('' when the writer cannot tag it: it
# does not hold the base version, so the copy is fenced, never left untagged), ARGV[9]
# the turn count it leaves ('' when untagged: counted here). The write's own arguments
# follow, from ARGV[10].
_WRITE_PROLOGUE: Final = """
local base, nv = tonumber(ARGV[1]), tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[1], 'v', 'f')
local cv, cf = tonumber(cur[1]), tonumber(cur[2])
local at_base = cv and cv == base and ARGV[8] ~= ''  -- may change the copy in place
local function done(status)
  if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
  return status
end
local function set_count(change)  -- the writer's count when tagged, else counted here
  if ARGV[9] == '' then
    redis.call('HINCRBY', KEYS[1], 'n', change)
  else
    redis.call('HSET', KEYS[1], 'n', ARGV[9])
  end
end
local function fence_or_newer()
  if (cv and cv >= nv) or (cf and cf >= nv) then return done(2) end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'f', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return done(0)
end
"""

# KEYS[1]; ARGV: base, new version, ttl_ms, updated_us, expires_us, channel, message,
# state tag, count, new turn 1, ... (the new turns hold seq base + 1, base + 2, ...).
# Returns 1 updated in place, 2 already as new or newer, 0 fenced (see _OUTCOMES).
_APPEND: Final = (
    _WRITE_PROLOGUE
    + """
if at_base then
  local fields = {'v', ARGV[2], 'u', ARGV[4], 'e', ARGV[5], 't', ARGV[8]}
  for i = 10, #ARGV do
    fields[#fields + 1] = tostring(base + i - 9)
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  set_count(#ARGV - 9)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return done(1)
end
return fence_or_newer()
"""
)

# KEYS[1]; ARGV: base, new version, ttl_ms, updated_us, expires_us, channel, message,
# state tag, count, removed seq 1, ... (ascending). A pop or a clear: the copy at the
# writer's base version loses those turns in place, O(turns removed), and its summary if
# that covered one of them; a copy that does not hold them all is not the base: fenced.
# Returns as _APPEND.
_REMOVE: Final = (
    _WRITE_PROLOGUE
    + """
if at_base then
  local gone = 0
  for i = 10, #ARGV, 400 do
    gone = gone + redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 399, #ARGV)))
  end
  if gone == #ARGV - 9 then
    local s = redis.call('HGET', KEYS[1], 's')
    local covers = s and tonumber(string.match(s, '^%["[^"]*",(%d+),'))
    if covers and gone > 0 and covers >= tonumber(ARGV[10]) then
      redis.call('HDEL', KEYS[1], 's')
    end
    redis.call('HSET', KEYS[1], 'v', ARGV[2], 'u', ARGV[4], 'e', ARGV[5], 't', ARGV[8])
    set_count(-gone)
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return done(1)
  end
end
return fence_or_newer()
"""
)

# KEYS[1]; ARGV: base, new version, ttl_ms, updated_us, expires_us, channel, message,
# state tag, count (unused: a summary changes no turn), summary. A saved summary replaces
# the one of the copy at the writer's base version; any other copy is fenced. Returns
# as _APPEND does.
_SUMMARISE: Final = (
    _WRITE_PROLOGUE
    + """
if at_base then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'u', ARGV[4], 'e', ARGV[5], 's', ARGV[10],
             't', ARGV[8])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return done(1)
end
return fence_or_newer()
"""
)

# KEYS[1]; ARGV as _APPEND's without turns: a change whose payload is not at hand (a
# replayed write, a delete) only fences an older copy. Returns 2 or 0 as _APPEND does.
_MOVE: Final = _WRITE_PROLOGUE + "\nreturn fence_or_newer()\n"

# KEYS[1]; ARGV: ttl_ms. Drops a value that failed to decode, keeping a valid fence.
_DROP: Final = """
local f = redis.pcall('HGET', KEYS[1], 'f')
redis.call('DEL', KEYS[1])
if type(f) == 'string' and tonumber(f) then
  redis.call('HSET', KEYS[1], 'f', f)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"""


_OUTCOMES: Final = {
    1: WriteOutcome.EXTENDED,
    2: WriteOutcome.ALREADY_NEWER,
    0: WriteOutcome.FENCED,
}


class RedisCache:
    """L2. ``from_url`` builds and owns its client; no I/O until the first call.

    With ``tags`` every copy it writes is tagged and every copy it reads must be
    (``cache/tags.py``): what Redis holds is then not trusted for owner, version or
    turns. Every instance sharing the Redis needs the same tag key.
    """

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "convmem:",
        ttl_seconds: float = 1800.0,
        url: str = "",
        socket_timeout: float = 0.25,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        silence_limit_seconds: float = SILENCE_LIMIT_SECONDS,
        tags: CacheTags | None = None,
    ) -> None:
        self.client = client
        self.tags = tags
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        # Hash-tagged: on a cluster, the sharded channel lives on one shard.
        self.channel = f"{prefix}{{invalidations}}"
        self._install = client.register_script(_INSTALL)
        self._append = client.register_script(_APPEND)
        self._remove = client.register_script(_REMOVE)
        self._summarise = client.register_script(_SUMMARISE)
        self.cluster = isinstance(client, RedisCluster)
        self._move = client.register_script(_MOVE)
        self.claims = RedisClaims(client, self.key)
        self.bus = RedisBus(
            client,
            self.channel,
            url=url,
            socket_timeout=socket_timeout,
            heartbeat_seconds=heartbeat_seconds,
            silence_limit_seconds=silence_limit_seconds,
        )
        self._drop = client.register_script(_DROP)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "convmem:",
        ttl_seconds: float = 1800.0,
        socket_timeout: float = 0.25,
        max_connections: int = REDIS_MAX_CONNECTIONS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        tags: CacheTags | None = None,
    ) -> Self:
        client = connect(
            url,
            socket_timeout=socket_timeout,
            connect_timeout=socket_timeout,
            max_connections=max_connections,
        )
        return cls(
            client,
            prefix=prefix,
            ttl_seconds=ttl_seconds,
            url=url,
            socket_timeout=socket_timeout,
            heartbeat_seconds=heartbeat_seconds,
            tags=tags,
        )

    def key(self, thread_id: str) -> str:
        return f"{self.prefix}{{{thread_id}}}"

    async def aclose(self) -> None:
        await self.client.aclose()

    async def ping(self) -> None:
        with translated():
            await self.client.ping()

    async def get(self, thread_id: str) -> Thread | None:
        """The cached copy, or None (missing or fenced); raises ``CorruptPayload``."""
        try:
            with translated():
                raw = await self.client.hgetall(self.key(thread_id))
        except L2Error as exc:
            if isinstance(exc.__cause__, ResponseError):  # WRONGTYPE: a foreign value
                raise CorruptPayload(str(exc.__cause__)) from exc
            raise
        fields = cast("dict[bytes, bytes]", raw)
        return decode_thread(thread_id, fields, self.tags) if fields else None

    async def version(self, thread_id: str) -> int:
        """The highest version L2 knows of (cached copy or fence); 0 if none."""
        with translated():
            raw = await self.client.hmget(self.key(thread_id), ["v", "f"])
        values = cast("list[bytes | None]", raw)
        fields = {k: v for k, v in zip((b"v", b"f"), values, strict=True) if v is not None}
        try:
            return max(int(fields.get(b"v", 0)), fence_of(fields))
        except (ValueError, CorruptPayload):
            return 0  # a corrupt value is found and dropped by the next read

    async def install(self, thread: Thread, now: datetime) -> bool:
        """Cache ``thread`` unless a newer copy or a higher fence is there."""
        ttl_ms = self._ttl_ms(thread.expires_at, now)
        if ttl_ms <= 0:
            return False
        tags, thread_id = self.tags, thread.id
        header = encode_header(thread)
        updated_us, expires_us = to_micros(thread.updated_at), to_micros(thread.expires_at)
        summary = thread.summary
        state = state_tag(
            tags,
            thread_id,
            thread.version,
            len(thread.turns),
            0 if summary is None else summary.seq,
            updated_us,
            expires_us,
        )
        args: list[Any] = [
            thread.version,
            ttl_ms,
            header,
            updated_us,
            expires_us,
            b"" if summary is None else encode_summary(summary, thread_id, tags),
            header_tag(tags, thread_id, header),
            state,
            *chain.from_iterable(
                zip(
                    [t.seq for t in thread.turns],
                    encode_turns(thread.turns, thread_id, tags),
                    strict=True,
                )
            ),
        ]
        with translated():
            return bool(await self._install(keys=[self.key(thread.id)], args=args))

    async def apply(
        self,
        change: Change,
        now: datetime,
        *,
        source: str,
        after: CopyState | None = None,
    ) -> WriteOutcome:
        """Bring the cached copy up to ``change`` (see ``L2Tier.apply``): one script per
        kind behind one prologue, which also announces it on one server."""
        if isinstance(change, Created | Replaced):
            installed = await self.install(change.thread, now)
            if isinstance(change, Replaced):
                await self.bus.announce(change.thread_id, change.version, source)
            return WriteOutcome.INSTALLED if installed else WriteOutcome.ALREADY_NEWER
        if isinstance(change, Moved | Deleted | Updated):
            # No copy follows it here (an update's new header would need the writer's
            # copy): an older one is fenced, and the next read anywhere loads it.
            return await self._write(self._move, change.thread_id, change.version, (), source)
        thread_id, tags = change.thread_id, self.tags
        payload: list[Any]
        if isinstance(change, Appended):
            script, payload = self._append, encode_turns(change.new_turns, thread_id, tags)
        elif isinstance(change, Removed):
            script, payload = self._remove, list(change.seqs)
        else:
            script, payload = self._summarise, [encode_summary(change.summary, thread_id, tags)]
        return await self._write(
            script, thread_id, change.version, payload, source, (change, after, now)
        )

    async def _write(
        self,
        script: AsyncScript,
        thread_id: str,
        version: int,
        payload: Sequence[Any],
        source: str,
        in_place: tuple[InPlace, CopyState | None, datetime] | None = None,
    ) -> WriteOutcome:
        """Run a write script and announce the write: inside the script on one server
        (one round trip), after it on a cluster. ``in_place``: the change a copy at its
        base version follows, the state it leaves, and the time now; without it (a
        ``Moved``) an older copy is fenced at ``version``."""
        message = announcement(thread_id, version, source)
        inline = not self.cluster
        if in_place is None:  # no state to leave: never at base (tag ''), fenced
            base, ttl_ms, updated_us, expires_us = version, self._ttl_ms(None, None), 0, 0
            tag, count = b"", b""
        else:
            change, after, now = in_place
            base, ttl_ms = change.base_version, max(self._ttl_ms(change.expires_at, now), 1)
            updated_us, expires_us = to_micros(change.updated_at), to_micros(change.expires_at)
            if self.tags is None:  # untagged: the script counts the turns itself
                tag, count = UNTAGGED, b""
            elif after is None:  # a state it cannot tag is fenced, never left untagged
                tag, count = b"", b""
            else:
                tag = state_tag(
                    self.tags,
                    thread_id,
                    version,
                    after.count,
                    after.summary_seq,
                    updated_us,
                    expires_us,
                )
                count = b"%d" % after.count
        args: list[Any] = [
            base,
            version,
            ttl_ms,
            updated_us,
            expires_us,
            self.channel if inline else "",
            message,
            tag,
            count,
            *payload,
        ]
        with translated():
            status = int(await script(keys=[self.key(thread_id)], args=args))
        if not inline:
            await self.bus.announce(thread_id, version, source)
        return _OUTCOMES[status]

    async def drop(self, thread_id: str) -> None:
        """Remove a value that failed to decode (keeping a valid fence)."""
        with translated():
            await self._drop(keys=[self.key(thread_id)], args=[self._ttl_ms(None, None)])

    def _ttl_ms(self, expires_at: datetime | None, now: datetime | None) -> int:
        """The L2 lifetime, never past the thread's own expiry."""
        ttl = self.ttl_seconds
        if expires_at is not None and now is not None:
            ttl = min(ttl, (expires_at - now).total_seconds())
        return int(ttl * 1000)
