"""The invalidation bus on Redis: writes announced on one channel (a sharded one on a
Cluster), heard by every instance's subscription, which a heartbeat keeps honest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import orjson
from redis.exceptions import RedisClusterException, RedisError

from convmem.cache.protocol import Alive, Invalidation, L2Error, Subscribed
from convmem.cache.redis_connection import (
    LISTENER_CONNECTIONS,
    Subscription,
    announce,
    connect,
    identity,
    translated,
)

if TYPE_CHECKING:
    from convmem.cache.redis_connection import Client

log = logging.getLogger("convmem.cache")

HEARTBEAT_SECONDS: Final = 0.25  # the subscriber pings Redis this often (a quarter lease)
SILENCE_LIMIT_SECONDS: Final = 3.0  # a ping unanswered this long: the subscription is lost
IDENTITY_CHECK_SECONDS: Final = 1.0  # a cluster's primaries are checked this often


class RedisBus:
    """Implements ``InvalidationBus`` on ``channel``; ``client`` (the tier's) tells
    Redis' identity, each subscription gets a client of its own from ``url``."""

    def __init__(
        self,
        client: Client,
        channel: str,
        *,
        url: str,
        socket_timeout: float,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        silence_limit_seconds: float = SILENCE_LIMIT_SECONDS,
    ) -> None:
        self.client = client
        self.channel = channel
        self.url = url
        self.socket_timeout = socket_timeout
        self.heartbeat_seconds = heartbeat_seconds
        self.silence_limit_seconds = silence_limit_seconds

    async def invalidations(self) -> AsyncIterator[Subscribed | Alive | Invalidation]:
        """Subscribe on a client of its own (it blocks on reads, so no socket timeout).

        Yields ``Subscribed`` once the server confirmed the subscription (with Redis' run
        id, which changes when it restarts), then one ``Invalidation`` per message and
        one ``Alive`` per answered heartbeat. A PING goes out every ``heartbeat_seconds``
        whatever the traffic, since a hung server keeps its sockets open and only an
        unanswered heartbeat tells us we would no longer hear of other writers; raises
        ``L2Error`` when the subscription breaks or a heartbeat stays unanswered for
        ``silence_limit_seconds``.
        """
        client = connect(
            self.url,
            socket_timeout=None,
            connect_timeout=self.socket_timeout,
            max_connections=LISTENER_CONNECTIONS,
        )
        subscription = Subscription(client, self.channel)
        clock = asyncio.get_running_loop().time
        try:
            requested = clock()
            with translated():
                await subscription.open()
            pinged: float | None = requested  # the SUBSCRIBE's confirmation is awaited like a pong
            next_ping = requested + self.heartbeat_seconds
            subscribed_as: str | None = None
            next_identity_check = requested + IDENTITY_CHECK_SECONDS
            while True:
                now = clock()
                if pinged is not None and now - pinged > self.silence_limit_seconds:
                    raise L2Error(
                        f"Redis did not answer on {self.channel} for {self.silence_limit_seconds}s"
                    )
                if subscription.cluster and subscribed_as and now >= next_identity_check:
                    # A failover changes no subscription but may lose fences: resubscribe,
                    # and the new identity reads as a restart.
                    if await self.run_id() != subscribed_as:
                        raise L2Error("the Redis Cluster's primaries changed (a failover)")
                    next_identity_check = now + IDENTITY_CHECK_SECONDS
                if pinged is None and now >= next_ping:
                    with translated():
                        await subscription.ping()
                    pinged, next_ping = now, now + self.heartbeat_seconds
                # Poll briefly while a ping is unanswered (to see the silence limit pass),
                # else sleep until the next ping is due.
                wait = 0.05 if pinged is not None else max(0.0, next_ping - now)
                with translated():
                    event = await subscription.next_event(min(wait, self.heartbeat_seconds))
                if event is None:
                    continue
                if event.kind == "pong" and pinged is not None:
                    yield Alive(clock() - pinged)
                    pinged = None
                elif event.kind == "subscribed" and pinged is not None:
                    subscribed_as = await self.run_id()
                    yield Subscribed(subscribed_as, clock() - pinged)
                    pinged = None
                elif event.kind == "message":
                    parsed = _parsed(event.data)
                    if parsed is not None:
                        yield parsed
        finally:
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await subscription.aclose()

    async def announce(self, thread_id: str, version: int, source: str) -> None:
        """Tell every subscriber that ``source`` committed ``version`` of a thread (on
        one server the write scripts do it themselves, in the write's round trip)."""
        with translated():
            await announce(self.client, self.channel, announcement(thread_id, version, source))

    async def run_id(self) -> str:
        """The Redis process' run id (a cluster's: its primaries'): a new one means it
        restarted or failed over, and may have lost fences."""
        with translated():
            return await identity(self.client)


def announcement(thread_id: str, version: int, source: str) -> bytes:
    """The message that announces ``version`` of a thread, written by ``source``."""
    return orjson.dumps({"id": thread_id, "v": version, "src": source})


def _parsed(data: bytes) -> Invalidation | None:
    try:
        message = orjson.loads(data)
        return Invalidation(str(message["id"]), int(message["v"]), str(message["src"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("ignoring a malformed invalidation message: %r", data[:200])
        return None
