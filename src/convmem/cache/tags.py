"""Tags that let an instance tell its own cached copies from ones someone else wrote.

Whoever can write Redis (a shared cache, a loose ACL) must not be able to show one
owner's conversation to another, or make an acknowledged turn disappear, by editing a
hash. So every part of an L2 copy carries a keyed tag (BLAKE2b, 128 bits), made by the
instance that wrote it and checked by every instance that reads it:

- the header (``h``: owner, parent and cut, tool, metadata, created) by ``a``;
- the state (``v`` version, ``n`` turn count, the seq the summary covers, ``u``, ``e``)
  by ``t``: a writer that changes the copy in place sends the tag of the state it
  makes, so a version or count edited in Redis no longer matches;
- each turn (bound to its seq) and the summary, inside their own values.

A copy whose tags do not match is ``CorruptPayload``: dropped, counted, and read again
from the store. What a writer to Redis can still do: delete copies (a cache miss), or
put back an older copy this deployment wrote itself (a rollback, served until a newer
version is announced or the copy expires; never a copy of another thread, another
owner's, or one with a turn missing or moved).

The key is ``CONVMEM_CACHE_KEY`` or, with encryption at rest, derived from the first
encryption key; every instance sharing a Redis needs the same one. Without either,
copies carry no tags and Redis is trusted (the README says so).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final

from convmem.errors import ConfigurationError

TAG_BYTES: Final = 16
TAG_CHARS: Final = 22  # unpadded URL-safe base64 of 16 bytes
_PERSON: Final = b"convmem-l2-tags"


class CacheTags:
    """Makes and checks the tags of L2 copies under one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a cache tag key is 32 bytes")
        # Keyed BLAKE2b is a PRF: deriving the tag key from the configured one keeps a
        # key shared with encryption from being used for two purposes as is.
        self._key = hashlib.blake2b(b"convmem cache tags v1", key=key, digest_size=32).digest()

    @classmethod
    def from_text(cls, text: str, *, setting: str) -> CacheTags:
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
        return cls(key)

    def tag(self, *parts: bytes | memoryview) -> bytes:
        """The tag of ``parts`` (each length-prefixed, so no two sequences collide), as
        ``TAG_CHARS`` ASCII characters."""
        mac = hashlib.blake2b(key=self._key, digest_size=TAG_BYTES, person=_PERSON)
        for part in parts:
            mac.update(
                part.nbytes.to_bytes(4, "big")
                if isinstance(part, memoryview)
                else len(part).to_bytes(4, "big")
            )
            mac.update(part)
        return base64.urlsafe_b64encode(mac.digest())[:TAG_CHARS]

    def matches(self, tag: bytes, *parts: bytes | memoryview) -> bool:
        return hmac.compare_digest(tag, self.tag(*parts))
