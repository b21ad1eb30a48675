"""How ``Memory.from_settings`` builds a Memory's parts: the store its URL names, the
Redis tier, the encryption and the L1 tier, and which of them the Memory then owns.

The ownership rule: what is built here, the Memory closes; what the caller passed in
(a store), it leaves open. Concrete parts (store URLs' schemes, ``RedisCache``,
``Encryption``) are known here, never in ``Memory``; each driver is imported only when
its part is configured, so ``import convmem`` needs no extra.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from convmem.cache.local import LocalCache
from convmem.cache.tags import CacheTags
from convmem.extras import needs_extra
from convmem.stores import store_from_url

if TYPE_CHECKING:
    from convmem.cache.protocol import L2Tier
    from convmem.clocks import Timer
    from convmem.sealing import Sealing
    from convmem.settings import Settings
    from convmem.stores.base import Store

log = logging.getLogger("convmem")


@dataclass(frozen=True, slots=True)
class Parts:
    """A Memory's parts; ``owned``: those built here, which the Memory closes."""

    store: Store
    cache: L2Tier | None
    local: LocalCache
    encryption: Sealing | None
    owned: tuple[Store | L2Tier, ...]


def assemble(settings: Settings, *, store: Store | None, timer: Timer) -> Parts:
    """The parts ``settings`` describe; ``store``, when given, instead of
    ``settings.store.url`` (and not owned)."""
    owned: list[Store | L2Tier] = []
    if store is None:
        store = build_store(settings)
        owned.append(store)
    cache = _redis_tier(settings)
    if cache is not None:
        owned.append(cache)
    local = LocalCache(
        max_items=settings.cache.l1_max_items,
        max_bytes=settings.cache.l1_max_bytes,
        ttl=settings.cache.l1_ttl_seconds,
        timer=timer,
    )
    return Parts(store, cache, local, encryption_of(settings), tuple(owned))


def build_store(settings: Settings, url: str | None = None) -> Store:
    """The store at ``url`` (default: ``settings.store.url``) with the settings' limits
    and its kind's options (pool sizes, timeouts, Supabase's key); no I/O."""
    url = url or settings.store.url
    return store_from_url(url, limits=settings.thread_limits, **_store_options(url, settings))


def encryption_of(settings: Settings) -> Sealing | None:
    """The sealing the settings' encryption keys make, or None without keys."""
    if settings.encryption.keys is None:
        return None
    with needs_extra("encryption", "CONVMEM_ENCRYPTION_KEYS (encryption at rest)"):
        from convmem.encryption import Encryption
    return Encryption(
        settings.encryption.keys.get_secret_value(),
        accept_plaintext=settings.encryption.accept_plaintext,
        accept_legacy=settings.encryption.accept_legacy,
    )


def _redis_tier(settings: Settings) -> L2Tier | None:
    if settings.cache.url is None:
        return None
    with needs_extra("redis", "CONVMEM_CACHE_URL (the Redis tier)"):
        from convmem.cache.redis import RedisCache  # imported only when a cache URL is set

    return RedisCache.from_url(
        settings.cache.url,
        prefix=settings.cache.prefix,
        ttl_seconds=settings.cache.l2_ttl_seconds,
        socket_timeout=settings.cache.redis_socket_timeout,
        max_connections=settings.cache.redis_max_connections,
        heartbeat_seconds=settings.cache.lease_seconds / 4,
        tags=_cache_tags(settings),
    )


def _cache_tags(settings: Settings) -> CacheTags | None:
    """The key that tags L2 copies: CONVMEM_CACHE_KEY, else the first encryption key.
    Sealed turns are bound to their place by their ciphertext: only plain ones need tags."""
    sealed = settings.encryption.keys is not None
    if settings.cache.key is not None:
        return CacheTags.from_text(
            settings.cache.key.get_secret_value(), setting="CONVMEM_CACHE_KEY", turns=not sealed
        )
    if settings.encryption.keys is not None:
        first = settings.encryption.keys.get_secret_value().split(",")[0]
        return CacheTags.from_text(first, setting="CONVMEM_ENCRYPTION_KEYS", turns=False)
    log.warning(
        "Redis copies are not authenticated (neither CONVMEM_CACHE_KEY nor"
        " CONVMEM_ENCRYPTION_KEYS is set): whoever can write to this Redis can change"
        " what is served, another owner's threads included; set CONVMEM_CACHE_KEY"
        " (from `convmem keygen`) on every instance"
    )
    return None


def _store_options(url: str, settings: Settings) -> dict[str, Any]:
    scheme = url.partition("://")[0].lower()
    if scheme in {"postgres", "postgresql"}:
        return {
            "min_size": settings.store.pg_pool_min_size,
            "max_size": settings.store.pg_pool_max_size,
            "prepared_statements": settings.store.pg_prepared_statements,
            "connect_timeout": settings.store.pg_connect_timeout_seconds,
            "pool_timeout": settings.store.pg_pool_timeout_seconds,
        }
    if scheme.startswith("supabase"):
        key = settings.store.supabase_service_key
        return {
            "project_url": settings.store.supabase_url,
            "service_key": key.get_secret_value() if key is not None else None,
            "deadline": settings.store.timeout_seconds,
        }
    return {}
