"""Loopback TCP proxies for benchmarks and fault tests, each on its own thread and loop.

``TcpProxy`` forwards bytes; ``cut()`` drops every open connection and refuses new
ones (the network between client and server is gone while the server and its data
live on) and ``restore()`` lets traffic through again.

``PgWireProxy`` also reads the PostgreSQL frontend protocol and counts the messages
that end a round trip, ``Sync`` (extended protocol) and ``Query`` (simple protocol):
libpq sends one per statement it waits on, so the count is what the network sees.
With ``delay`` set it holds each round trip that long, as a distant database would.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

T = TypeVar("T")


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> Self:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        async def drop() -> None:
            self._cut = True
            for writer in list(self._writers):
                writer.transport.abort()

        self._call(drop())

    def restore(self) -> None:
        async def allow() -> None:
            self._cut = False

        self._call(allow())

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._cut:
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}
        upstream = asyncio.ensure_future(self._upstream(client_r, server_w))
        downstream = asyncio.ensure_future(_pipe(server_r, client_w))
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            for task in (upstream, downstream):
                task.cancel()
            for writer in (client_w, server_w):
                self._writers.discard(writer)
                writer.close()

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _pipe(reader, writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


class PgWireProxy(TcpProxy):
    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.0) -> None:
        super().__init__(target_host, target_port)
        self.delay = delay
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
                if self.delay:
                    # Held before it is sent: the server answers a round trip only after its
                    # Sync (or Query) arrives, so this is the whole round trip's latency, once.
                    await asyncio.sleep(self.delay)
            writer.write(header + body)
            await writer.drain()
