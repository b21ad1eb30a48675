"""Tags that let an instance tell its own cached copies from ones someone else wrote.

Whoever can write Redis (a shared cache, a loose ACL) must not be able to show one
owner's conversation to another, or make an acknowledged turn disappear, by editing a
hash. So every part of an L2 copy carries a keyed tag (BLAKE2b, 128 bits), made by the
instance that wrote it and checked by every instance that reads it:

- the header (``h``: owner, parent and cut, tool, metadata, created) by ``a``;
- the state (``v`` version, ``n`` turn count, the seq the summary covers, ``u``, ``e``)
  by ``t``: a writer that changes the copy in place sends the tag of the state it
  makes, so a version or count edited in Redis no longer matches;
- each turn (bound to its seq) and the summary, inside their own values; with
  encryption at rest their ciphertext already binds them to thread, role and seq (and a
  copy that fails to open is dropped the same way), so ``turns=False`` spares the cost.

A copy whose tags do not match is ``CorruptPayload``: dropped, counted, and read again
from the store. What a writer to Redis can still do: delete copies (a cache miss), or
put back an older copy this deployment wrote itself (a rollback, served until a newer
version is announced or the copy expires; never a copy of another thread, another
owner's, or one with a turn missing or moved).

The key is ``CONVMEM_CACHE_KEY`` or, with encryption at rest, derived from the first
encryption key; every instance sharing a Redis needs the same one. Without either,
copies carry no tags and Redis is trusted (the README says so).

Checking is on the path of every L2 hit, once per turn: the keyed hash is set up once
(per key, then per thread and part) and copied for each tag, so what remains is hashing
the bytes (about 1.5 ns a byte here: 2 µs for a turn of 750 bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final

from convmem.errors import ConfigurationError

TAG_BYTES: Final = 16
TAG_CHARS: Final = 2 * TAG_BYTES  # written in hex
_PERSON: Final = b"convmem-l2-tags"


class CacheTags:
    """Makes and checks the tags of L2 copies under one 32-byte key."""

    def __init__(self, key: bytes, *, turns: bool = True) -> None:
        if len(key) != 32:
            raise ValueError("a cache tag key is 32 bytes")
        self.turns = turns  # tag each turn and the summary too (not needed when sealed)
        # Keyed BLAKE2b is a PRF: deriving the tag key from the configured one keeps a
        # key shared with encryption from being used for two purposes as is.
        derived = hashlib.blake2b(b"convmem cache tags v1", key=key, digest_size=32).digest()
        self._keyed = hashlib.blake2b(key=derived, digest_size=TAG_BYTES, person=_PERSON)

    @classmethod
    def from_text(cls, text: str, *, setting: str, turns: bool = True) -> CacheTags:
        """From a key as ``convmem keygen`` prints it (32 bytes, URL-safe base64)."""
        try:
            key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            key = b""
        if len(key) != 32:
            raise ConfigurationError(
                f"{setting} must be 32 random bytes in URL-safe base64 (44 characters);"
                " make one with `convmem keygen`"
            )
        return cls(key, turns=turns)

    def of(self, label: bytes, thread_id: str) -> PartTags:
        """The tags of one kind of part (``label``) of one thread."""
        mac = self._keyed.copy()
        # Neither the label nor a thread id holds NUL: the two cannot run together.
        mac.update(label + b"\0" + thread_id.encode() + b"\0")
        return PartTags(mac)

    def tag(self, label: bytes, thread_id: str, value: bytes | memoryview) -> bytes:
        return self.of(label, thread_id).tag(value)


class PartTags:
    """Tags of the parts of one kind of one thread (``CacheTags.of``)."""

    __slots__ = ("_mac",)

    def __init__(self, mac: hashlib.blake2b) -> None:
        self._mac = mac

    def tag(self, value: bytes | memoryview, seq: int | None = None) -> bytes:
        """The tag of ``value`` (at ``seq``, for a turn), as ``TAG_CHARS`` hex digits."""
        mac = self._mac.copy()
        if seq is not None:
            mac.update(b"%d\0" % seq)  # digits, then a NUL: the value cannot reach into it
        mac.update(value)
        return mac.hexdigest().encode("ascii")

    def matches(self, tag: bytes, value: bytes | memoryview, seq: int | None = None) -> bool:
        return hmac.compare_digest(tag, self.tag(value, seq))
