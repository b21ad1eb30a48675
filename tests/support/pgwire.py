"""A TCP proxy that counts PostgreSQL round trips on the wire.

It parses the frontend (client → server) side of the PostgreSQL protocol and
counts the messages that end a round trip: ``Sync`` (extended protocol) and
``Query`` (simple protocol). libpq sends one of them per statement it waits on,
so the count is what the network sees, independent of our own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading

from tests.support.tcpproxy import TcpProxy

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


class CountingProxy(TcpProxy):
    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self._count = 0
        self._lock = threading.Lock()

    @property
    def round_trips(self) -> int:
        with self._lock:
            return self._count

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await self._relay_frontend(reader, writer)

    async def _relay_frontend(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Start-up: untyped messages until the StartupMessage (SSL/GSS requests come first).
        while True:
            header = await reader.readexactly(8)
            length, code = struct.unpack("!ii", header)
            body = await reader.readexactly(length - 8)
            writer.write(header + body)
            await writer.drain()
            if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                if code == _CANCEL_REQUEST:
                    return
                break
        # Typed messages: one byte of type, four of length (which counts itself).
        while True:
            header = await reader.readexactly(5)
            kind = header[:1]
            (length,) = struct.unpack("!i", header[1:])
            body = await reader.readexactly(length - 4)
            if kind in (b"S", b"Q"):
                with self._lock:
                    self._count += 1
            writer.write(header + body)
            await writer.drain()
