"""How L2 reaches Redis: one server (``redis://``, ``rediss://``, ``unix://``) or a
Redis Cluster (``redis+cluster://host:port[,host:port…]``, ``rediss+cluster://`` with
TLS), and how it listens for invalidations on each.

On a single server, invalidations travel on a plain pub/sub channel and liveness is a
PING answered on the subscribing connection. On a cluster, plain PUBLISH would be
broadcast to every node, so invalidations use sharded pub/sub (SPUBLISH/SSUBSCRIBE,
Redis 7): the channel is hash-tagged and lives on one shard. Liveness there is a message
this instance SPUBLISHes to a channel of its own on the same shard and receives back on
its subscription: a round trip through the node that delivers invalidations.

A server's run id tells L2 that Redis restarted and lost its fences; a cluster's
identity is the run ids of its primaries, so a failover (a replica promoted, possibly
without the last writes) counts as a restart too.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.event import (
    AsyncAfterSlotsCacheRefreshEvent,
    AsyncEventListenerInterface,
    EventDispatcher,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    MaxConnectionsError,
    RedisClusterException,
    RedisError,
)

from convmem.cache.protocol import L2Error
from convmem.limits import REDIS_MAX_CONNECTIONS

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

CLUSTER_SCHEMES: Final = frozenset({"redis+cluster", "rediss+cluster"})
LISTENER_CONNECTIONS: Final = 2  # the subscription, and a reconnect's overlap
FULL_POOL: Final = (
    "every Redis connection of this instance is busy (CONVMEM_REDIS_MAX_CONNECTIONS):"
    " raise it, or add instances"
)
Client = aioredis.Redis | RedisCluster
EventKind = Literal["subscribed", "pong", "message"]


def is_cluster(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def connect(
    url: str,
    *,
    socket_timeout: float | None,
    connect_timeout: float,
    max_connections: int = REDIS_MAX_CONNECTIONS,
) -> Client:
    """A client for the URL, with no retries (the circuit breaker above decides when to
    try again) and short timeouts; ``socket_timeout=None`` for a blocking subscriber.

    At most ``max_connections`` connections (per node on a cluster): redis-py's pools
    grow without bound by default, one connection per concurrent call. On one Redis a
    call that finds them all busy waits up to ``connect_timeout`` for one to come back;
    a cluster node refuses it at once. Either way it fails like any Redis call
    (``L2Error``, served from the store), with a message that names the setting.
    """
    no_retry = Retry(NoBackoff(), 0)
    if not is_cluster(url):
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=connect_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=no_retry,
            health_check_interval=0,
        )
        return aioredis.Redis.from_pool(pool)
    parts = urlsplit(url)
    nodes = []
    for address in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = address.rpartition(":")
        nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
    events = EventDispatcher()
    client = _Cluster(
        startup_nodes=nodes,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme.lower().startswith("rediss"),
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=no_retry,
        event_dispatcher=events,
        max_connections=max_connections,
    )
    events.register_listeners({AsyncAfterSlotsCacheRefreshEvent: [_NodeRecorder(client)]})
    return client


class _Cluster(RedisCluster):
    """A cluster client that also closes the nodes a topology refresh dropped.

    When a failover removes a node from the slot map, redis-py stops using it but
    leaves the connections that were busy at that moment open, so they leak until
    garbage collection (redis-py #3572, #4053). Every node seen after a refresh is
    remembered here (a handful over a client's life) and closed with the client.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen_nodes: dict[int, ClusterNode] = {}

    async def aclose(self) -> None:
        current = {
            id(node)
            for cache in (self.nodes_manager.nodes_cache, self.nodes_manager.startup_nodes)
            for node in cache.values()
        }
        try:
            await super().aclose()
        finally:
            for key, node in self.seen_nodes.items():
                if key not in current:
                    with contextlib.suppress(Exception):  # a dead node's sockets still close
                        await node.disconnect()
            self.seen_nodes.clear()


class _NodeRecorder(AsyncEventListenerInterface):
    """Remembers the nodes in the slot map after every refresh (see ``_Cluster``)."""

    def __init__(self, client: _Cluster) -> None:
        self._client = client

    async def listen(self, event: object) -> None:
        manager = self._client.nodes_manager
        for cache in (manager.nodes_cache, manager.startup_nodes):
            for node in cache.values():
                self._client.seen_nodes.setdefault(id(node), node)


async def identity(client: Client) -> str:
    """The server's run id, or the sorted run ids of the cluster's primaries."""
    if isinstance(client, RedisCluster):
        infos: dict[str, Any] = await client.info("server", target_nodes=RedisCluster.PRIMARIES)
        return ",".join(sorted(str(info.get("run_id", "")) for info in infos.values()))
    info = await client.info("server")
    return str(info.get("run_id", ""))


async def announce(client: Client, channel: str, message: bytes) -> int:
    """Publish on the invalidation channel; how many subscribers received it."""
    if isinstance(client, RedisCluster):
        return int(await client.spublish(channel, message))
    return int(await client.publish(channel, message))


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    data: bytes = b""


class Subscription:
    """The invalidation channel as seen by one subscriber, on either kind of Redis."""

    def __init__(self, client: Client, channel: str) -> None:
        self._client = client
        self._channel = channel.encode()
        # The liveness channel shares the invalidation channel's hash tag: same shard.
        self._alive = f"{channel}:alive:{uuid.uuid4().hex}".encode()
        self._pubsub: PubSub | ClusterPubSub = client.pubsub()

    @property
    def cluster(self) -> bool:
        return isinstance(self._client, RedisCluster)

    async def open(self) -> None:
        if isinstance(self._client, RedisCluster):
            _ = await self._client.initialize()  # the slot map: pub/sub does not load it
            await self._pubsub.ssubscribe(self._channel, self._alive)
        else:
            await self._pubsub.subscribe(self._channel)

    async def ping(self) -> None:
        """Ask for a ``pong`` event (a PING, or a message to ourselves on a cluster)."""
        if isinstance(self._client, RedisCluster):
            await self._client.spublish(self._alive, b"ping")
        else:
            await self._pubsub.ping()

    async def next_event(self, wait: float) -> Event | None:
        """The next event within ``wait`` seconds, or None."""
        if isinstance(self._pubsub, ClusterPubSub):
            raw = await self._pubsub.get_sharded_message(timeout=wait)
        else:
            raw = await self._pubsub.get_message(timeout=wait)
        if raw is None:
            return None
        kind, channel = raw["type"], raw.get("channel")
        if kind in ("subscribe", "ssubscribe") and channel == self._channel:
            return Event("subscribed")
        if kind == "pong" or (kind == "smessage" and channel == self._alive):
            return Event("pong")
        if kind in ("message", "smessage") and channel == self._channel:
            return Event("message", bytes(raw["data"]))
        return None

    async def aclose(self) -> None:
        """Close the subscription and its client; the client even when closing the
        subscription fails or is cancelled (a subscriber stops by cancellation), else
        its connections leak until garbage collection."""
        try:
            await self._pubsub.aclose()
        finally:
            await self._client.aclose()


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """redis-py's errors (and socket errors) as ``L2Error``: the one place they are mapped."""
    try:
        yield
    except MaxConnectionsError as exc:
        raise L2Error(f"{FULL_POOL} ({exc})") from exc
    except RedisConnectionError as exc:
        if str(exc) == "No connection available.":  # BlockingConnectionPool's wait ran out
            raise L2Error(f"{FULL_POOL} (none came back in time)") from exc
        raise L2Error(f"{type(exc).__name__}: {exc}") from exc
    except (RedisError, RedisClusterException, OSError) as exc:
        raise L2Error(f"{type(exc).__name__}: {exc}") from exc
