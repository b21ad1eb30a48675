"""Encryption at rest (the ``encryption`` extra): ``Encryption`` seals what leaves the
process; ``convmem.key_rotation.rotate_keys`` re-seals stored threads under the newest key."""

from convmem.encryption.keys import new_key
from convmem.encryption.sealer import Encryption

__all__ = ["Encryption", "new_key"]
