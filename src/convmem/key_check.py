"""Encryption fails closed: at start-up, the keys a process holds are checked against the
keys its store holds sealed data under (``Store.sealing_keys``).

A process without keys on a store that holds sealed data would show ciphertext as text
and append plaintext turns into sealed threads; a process with the wrong key would seal
new threads that correctly keyed instances cannot open. Both are refused before the
first request, with the variable to set. A process with keys records the one it seals
with, so the next process is checked against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convmem.errors import ConfigurationError

if TYPE_CHECKING:
    from convmem.sealing import Sealing
    from convmem.stores.base import Store


async def check_sealing_keys(store: Store, sealing: Sealing) -> None:
    """Raise ``ConfigurationError`` unless ``sealing`` can open what ``store`` holds; with
    keys, record the current one (one store round trip)."""
    key_ids = sealing.key_ids
    current = key_ids[0] if key_ids else None
    recorded = await store.sealing_keys(current, key_ids)
    if current is None and recorded:
        raise ConfigurationError(
            f"this store holds threads encrypted at rest (key id {', '.join(recorded)}) and"
            " CONVMEM_ENCRYPTION_KEYS is not set: set it to the key(s) they were sealed with;"
            " convmem refuses to serve them as ciphertext or to add plaintext to them"
        )
    if current is not None and current not in recorded:
        raise ConfigurationError(
            f"CONVMEM_ENCRYPTION_KEYS holds none of the keys this store's threads are sealed"
            f" with (store: key id {', '.join(recorded)}; configured: {', '.join(key_ids)}):"
            " set the key(s) they were sealed with, first the one to seal new turns with"
            " (`convmem keygen` makes a new key; rotate-keys moves threads onto it)"
        )
