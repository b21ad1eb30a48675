"""Stores: the source of truth. No driver is imported until a store is built.

``store_from_url`` picks the store class by URL scheme through a small registry
that imports lazily, so ``import convmem`` never imports psycopg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from convmem.errors import ConfigurationError
from convmem.extras import needs_extra

if TYPE_CHECKING:
    from convmem.stores.base import Store

# scheme -> (module, class, the pip extra that installs its driver)
_REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("convmem.stores.sqlite", "SqliteStore", None),
    "postgresql": ("convmem.stores.postgres", "PostgresStore", "postgres"),
    "postgres": ("convmem.stores.postgres", "PostgresStore", "postgres"),
    "supabase": ("convmem.stores.supabase", "SupabaseStore", "supabase"),
    "supabase+https": ("convmem.stores.supabase", "SupabaseStore", "supabase"),
    "supabase+http": ("convmem.stores.supabase", "SupabaseStore", "supabase"),
}
STORE_SCHEMES = frozenset(_REGISTRY)


def store_from_url(url: str, **options: Any) -> Store:
    """Build (without I/O) the store a URL names; ``options`` go to its ``from_url``."""
    scheme = url.partition("://")[0].lower()
    try:
        module_name, class_name, extra = _REGISTRY[scheme]
    except KeyError:
        raise ConfigurationError(
            f"unsupported store URL scheme {scheme!r} in {redact_url(url)!r}; "
            f"use one of {sorted(STORE_SCHEMES)}"
        ) from None
    if extra is None:
        module = importlib.import_module(module_name)
    else:
        with needs_extra(extra, f"the {scheme} store ({redact_url(url)})"):
            module = importlib.import_module(module_name)
    store: Store = getattr(module, class_name).from_url(url, **options)
    return store


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{hostpart}"
