"""The request headers that decide who is calling and which session is theirs, read one
way everywhere: the single value, or a refusal when a request carries one twice.

Starlette's ``Headers.get`` and the SDK take the first of repeated headers, and
``dict(scope["headers"])`` takes the last: a client that sent ``Mcp-Session-Id`` twice
was checked against one value and served under the other. No client needs to repeat
these, so a request that does is refused before anything reads them.
"""

from __future__ import annotations

from collections.abc import Iterable

from convmem.errors import RepeatedHeaderError

AUTHORIZATION = b"authorization"
SESSION_ID = b"mcp-session-id"
SECURITY_HEADERS = (AUTHORIZATION, SESSION_ID)


def single(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The one value of header ``name`` (ASGI names are lower-case), or None; raises
    ``RepeatedHeaderError`` when it appears more than once."""
    found: bytes | None = None
    for key, value in headers:
        if key == name:
            if found is not None:
                raise RepeatedHeaderError(
                    f"the request carries {name.decode()} more than once: send it once"
                )
            found = value
    return None if found is None else found.decode("latin-1")


def check_single(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise ``RepeatedHeaderError`` if any security-relevant header appears twice."""
    pairs = list(headers)
    for name in SECURITY_HEADERS:
        single(pairs, name)


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (single(headers, AUTHORIZATION) or "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None
