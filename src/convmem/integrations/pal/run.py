"""``convmem pal``: pal-mcp-server's own stdio server, unchanged, with ``ConvmemStorage``
as its conversation storage, configured by convmem's settings (``CONVMEM_STORE_URL``,
``CONVMEM_CACHE_URL``, …) plus pal's own variables."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from convmem.extras import needs_extra
from convmem.integrations.pal import ConvmemStorage, install
from convmem.memory import Memory
from convmem.stores import redact_url

if TYPE_CHECKING:
    from convmem.settings import Settings

log = logging.getLogger("convmem.pal")


def run_pal(settings: Settings) -> None:
    """Serve pal on stdin/stdout until its client leaves; convmem's store is opened
    before pal's first request and closed after its last."""
    with needs_extra("pal", "convmem pal (pal-mcp-server)"):
        import server as pal_server  # pal-mcp-server's entry module
        import utils.storage_backend  # noqa: F401 - pal's storage module, to install into
    storage = ConvmemStorage(Memory.from_settings(settings))
    install(storage)
    cache = redact_url(settings.cache.url) if settings.cache.url else "no Redis"
    log.info("pal-mcp-server on convmem: %s, %s", redact_url(settings.store.url), cache)
    try:
        pal_server.run()
    finally:
        storage.shutdown()
