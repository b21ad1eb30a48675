"""Encryption keys: how they are written, their ids, and the per-thread keys they derive.

A key is 32 random bytes written in URL-safe base64 (``convmem keygen`` prints one).
Its id is derived from the key itself (a hash prefix, which reveals nothing usable
about the key), so a configuration is only the list of keys and a ciphertext names
the key that opens it. Each thread gets its own AES-SIV key, derived by HKDF-SHA256
over the thread id: one thread's ciphertext cannot be opened as another's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from convmem.errors import ConfigurationError

KEY_BYTES: Final = 32
KEY_ID_CHARS: Final = 8
_THREAD_KEY_BYTES: Final = 64  # AES-256-SIV: two 256-bit halves (MAC and cipher)
_CACHED_THREAD_KEYS: Final = 4096  # deriving one costs ~7 µs; a lookup ~0.1 µs


def new_key() -> str:
    """A fresh random key, written as ``CONVMEM_ENCRYPTION_KEYS`` expects it."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


@dataclass(frozen=True, slots=True)
class MasterKey:
    id: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"MasterKey(id={self.id!r})"


def parse_key(text: str) -> MasterKey:
    try:
        secret = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        secret = b""
    if len(secret) != KEY_BYTES:
        raise ConfigurationError(
            "an encryption key must be 32 random bytes in URL-safe base64 (44 characters);"
            " make one with `convmem keygen`"
        )
    digest = hashlib.sha256(b"convmem key id\0" + secret).hexdigest()
    return MasterKey(digest[:KEY_ID_CHARS], secret)


def parse_keys(keys: str | Iterable[str]) -> tuple[MasterKey, ...]:
    """Keys from a comma-separated string or a list; the first encrypts, all decrypt."""
    texts = keys.split(",") if isinstance(keys, str) else list(keys)
    parsed = tuple(parse_key(text) for text in texts if text.strip())
    if not parsed:
        raise ConfigurationError(
            "encryption needs at least one key; make one with `convmem keygen`"
        )
    if len({key.id for key in parsed}) != len(parsed):
        raise ConfigurationError("the same encryption key is listed twice")
    return parsed


class KeyRing:
    """The configured keys and the per-thread ciphers derived from them (bounded cache)."""

    def __init__(self, keys: str | Iterable[str]) -> None:
        self.keys = parse_keys(keys)
        self.current = self.keys[0]
        self._by_id = {key.id: key for key in self.keys}
        self._ciphers: OrderedDict[tuple[str, str], AESSIV] = OrderedDict()

    def knows(self, key_id: str) -> bool:
        return key_id in self._by_id

    def cipher(self, key_id: str, thread_id: str) -> AESSIV:
        """The AES-SIV cipher of ``thread_id`` under the key ``key_id`` (which must be known)."""
        slot = (key_id, thread_id)
        cipher = self._ciphers.get(slot)
        if cipher is not None:
            self._ciphers.move_to_end(slot)
            return cipher
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=_THREAD_KEY_BYTES,
            salt=None,
            info=b"convmem thread key v1\0" + thread_id.encode(),
        ).derive(self._by_id[key_id].secret)
        cipher = AESSIV(derived)
        self._ciphers[slot] = cipher
        if len(self._ciphers) > _CACHED_THREAD_KEYS:
            self._ciphers.popitem(last=False)
        return cipher
