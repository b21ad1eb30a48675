"""What pal-mcp-server's conversations were kept in before convmem, for the benchmark:
a whole-thread key-value store in Redis (``GET`` and ``SETEX`` of the whole thread's
JSON, as pal's Redis backend once was). Its own in-process dict needs no code here.

``python -m convmem_bench.pal_peers`` runs pal's own stdio server with this storage
installed (Redis URL and key prefix from ``PAL_KV_REDIS_URL`` and ``PAL_KV_PREFIX``).
"""

from __future__ import annotations

import os

import redis


class RedisWholeThreadStorage:
    """pal's storage interface on Redis strings: every write rewrites the whole thread."""

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix

    def get(self, key: str) -> str | None:
        value = self._redis.get(self._prefix + key)
        return None if value is None else bytes(value).decode()  # type: ignore[arg-type]

    def setex(self, key: str, ttl_seconds: int, value: str) -> None:
        # SETEX itself, as pal's Redis backend sent it (redis-py now deprecates the helper).
        self._redis.execute_command("SETEX", self._prefix + key, ttl_seconds, value)  # type: ignore[no-untyped-call]

    def set_with_ttl(self, key: str, ttl_seconds: int, value: str) -> None:
        self.setex(key, ttl_seconds, value)

    def shutdown(self) -> None:
        self._redis.close()


def main() -> None:
    import server as pal_server  # pal-mcp-server's entry module
    import utils.storage_backend as backend

    storage = RedisWholeThreadStorage(os.environ["PAL_KV_REDIS_URL"], os.environ["PAL_KV_PREFIX"])
    backend._storage_instance = storage
    try:
        pal_server.run()
    finally:
        storage.shutdown()


if __name__ == "__main__":
    main()
