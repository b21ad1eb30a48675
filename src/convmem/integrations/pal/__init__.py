"""pal-mcp-server (and its forks) on convmem, unmodified: ``ConvmemStorage`` is pal's
conversation storage interface backed by a ``Memory``.

pal keeps each thread as the JSON of its ``ThreadContext`` under ``thread:{uuid}`` and
rewrites the whole thread on every turn; ``ConvmemStorage`` reads it from convmem's
cache and turns each rewrite into an append of the new turns only.
"""

from convmem.errors import PalStorageError
from convmem.integrations.pal.storage import ConvmemStorage

__all__ = ["ConvmemStorage", "PalStorageError", "install"]


def install(storage: ConvmemStorage) -> None:
    """Make ``storage`` pal's storage backend: what ``utils.storage_backend.
    get_storage_backend()`` returns from now on, in this process."""
    import utils.storage_backend as backend  # pal's module

    backend._storage_instance = storage
