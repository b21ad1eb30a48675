"""Claims in Redis: a key beside the thread's (one Cluster slot) that expires, set only
if absent, released only by the token that took it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from convmem.cache.redis_connection import translated

if TYPE_CHECKING:
    from collections.abc import Callable

    from convmem.cache.redis_connection import Client

# KEYS[1]; ARGV: token. Ends a claim if it is still the one this token took.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisClaims:
    """Implements ``Claims``; ``key`` names a thread's key, the claims live beside it."""

    def __init__(self, client: Client, key: Callable[[str], str]) -> None:
        self.client = client
        self._key = key
        self._release = client.register_script(_RELEASE)

    async def take(self, name: str, thread_id: str, token: str, ttl_seconds: float) -> bool:
        with translated():
            taken = await self.client.set(
                self._claim_key(name, thread_id), token, nx=True, px=max(1, int(ttl_seconds * 1000))
            )
        return bool(taken)

    async def release(self, name: str, thread_id: str, token: str) -> None:
        with translated():
            await self._release(keys=[self._claim_key(name, thread_id)], args=[token])

    def _claim_key(self, name: str, thread_id: str) -> str:
        return f"{self._key(thread_id)}:{name}"
