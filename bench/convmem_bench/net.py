"""Loopback TCP proxies for benchmarks and fault tests, each on its own thread and loop.

``TcpProxy`` forwards bytes; ``cut()`` drops every open connection and refuses new
ones (the network between client and server is gone while the server and its data
live on) and ``restore()`` lets traffic through again.

Two proxies read the client's side of the conversation and count its round trips,
so "round trips per request" is what the network sees, not what our code believes:

- ``PgWireProxy`` reads the PostgreSQL frontend protocol and counts the messages that
  end a round trip, ``Sync`` (extended protocol) and ``Query`` (simple protocol):
  libpq sends one per statement it waits on;
- ``HttpWireProxy`` counts HTTP/1.1 requests (PostgREST calls, for the Supabase store).

With a delay set on their ``Meter``, they hold each round trip that long before it is
sent on, as a distant database would. ``ServerProcess`` runs one in a process of its
own, so the proxy never competes with the code being measured for the interpreter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import re
import struct
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

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


class Meter(Protocol):
    """What a counting proxy shares with whoever reads its figures."""

    delay: float  # seconds each round trip is held

    @property
    def round_trips(self) -> int: ...

    def tally(self) -> None: ...


class LocalMeter:
    """A meter read from other threads of the proxy's own process."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._count = 0
        self._lock = threading.Lock()

    @property
    def round_trips(self) -> int:
        with self._lock:
            return self._count

    def tally(self) -> None:
        with self._lock:
            self._count += 1


class SharedMeter:
    """A meter in shared memory: the proxy's process counts, the benchmark reads and sets
    the delay. Only the proxy's one event loop writes the count, so ``+= 1`` (a read and
    a write of the value) needs no lock around it."""

    def __init__(self, delay: Synchronized[float], count: Synchronized[int]) -> None:
        self._delay = delay
        self._count = count

    @property
    def delay(self) -> float:
        return float(self._delay.value)

    @delay.setter
    def delay(self, seconds: float) -> None:
        self._delay.value = seconds

    @property
    def round_trips(self) -> int:
        return int(self._count.value)

    def tally(self) -> None:
        self._count.value += 1


class MeteredProxy(TcpProxy):
    """A proxy that counts the round trips its clients make and can delay each one."""

    def __init__(self, target_host: str, target_port: int, *, meter: Meter | None = None) -> None:
        super().__init__(target_host, target_port)
        self.meter: Meter = meter or LocalMeter()

    @property
    def delay(self) -> float:
        return self.meter.delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.meter.delay = seconds

    @property
    def round_trips(self) -> int:
        return self.meter.round_trips

    async def _round_trip(self) -> None:
        """Called as a round trip's last message arrives, before it is sent on."""
        self.meter.tally()
        if delay := self.meter.delay:
            # The server answers only after this message arrives, so holding it here
            # delays the whole round trip, once.
            await asyncio.sleep(delay)

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await self._relay(reader, writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


class PgWireProxy(MeteredProxy):
    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
                await self._round_trip()
            writer.write(header + body)
            await writer.drain()


class HttpWireProxy(MeteredProxy):
    """Counts HTTP/1.1 requests on kept-alive connections; bodies must carry a
    Content-Length (httpx sends one for every JSON body)."""

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    raise ConnectionError("chunked request bodies are not counted; refusing")
            body = await reader.readexactly(length)
            await self._round_trip()
            writer.write(head + body)
            await writer.drain()


class RespProxy(MeteredProxy):
    """Counts Redis commands (RESP arrays), and by name those on keys starting with
    ``watch_prefix``. A client that pipelines sends several in one round trip, so for it
    this over-counts: a conservative count."""

    def __init__(self, target_host: str, target_port: int, *, watch_prefix: bytes = b"") -> None:
        super().__init__(target_host, target_port)
        self.watch_prefix = watch_prefix
        self.watched: collections.Counter[str] = collections.Counter()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await reader.readuntil(b"\r\n")
            parts = [line]
            arguments: list[bytes] = []
            if line.startswith(b"*"):  # an array of bulk strings: one command
                for _ in range(int(line[1:-2])):
                    header = await reader.readuntil(b"\r\n")
                    data = await reader.readexactly(int(header[1:-2]) + 2)
                    parts += [header, data]
                    arguments.append(data[:-2])
            watched = len(arguments) > 1 and arguments[1].startswith(self.watch_prefix)
            if self.watch_prefix and watched:
                self.watched[arguments[0].decode().upper()] += 1
            await self._round_trip()  # an inline command is one line
            writer.write(b"".join(parts))
            await writer.drain()


# A RESP command whose name is SUBSCRIBE, SSUBSCRIBE or PSUBSCRIBE (not a value that
# happens to contain the word).
_SUBSCRIBE = re.compile(rb"\*\d+\r\n\$\d+\r\n[SP]?SUBSCRIBE\r\n", re.IGNORECASE)


class RedisRoundTripProxy(MeteredProxy):
    """Counts Redis round trips, not commands: a burst the client sends after the server
    last answered is one round trip, so a pipeline (``MULTI … EXEC`` or not) counts once,
    as the network sees it. Connections that subscribe (pub/sub listeners, whose pings
    are heartbeats, not work) are relayed but neither counted nor delayed."""

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        answered = [True]  # the server answered since the last counted burst
        subscriber = [False]

        async def upstream() -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while data := await client_r.read(65536):
                    if not subscriber[0] and _SUBSCRIBE.match(data):
                        subscriber[0] = True
                    if answered[0] and not subscriber[0]:
                        answered[0] = False
                        await self._round_trip()
                    server_w.write(data)
                    await server_w.drain()

        async def downstream() -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while data := await server_r.read(65536):
                    answered[0] = True
                    client_w.write(data)
                    await client_w.drain()

        self._writers |= {client_w, server_w}
        tasks = {asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_w, server_w):
                self._writers.discard(writer)
                writer.close()


class _Server(Protocol):
    port: int

    def start(self) -> Any: ...

    def stop(self) -> None: ...


class ServerProcess:
    """Runs ``factory()`` (a server with ``start``, ``port`` and ``stop``) in a spawned
    process until ``stop``; ``factory`` and its arguments must pickle."""

    def __init__(self, factory: Callable[[], _Server]) -> None:
        context = multiprocessing.get_context("spawn")
        self._control, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve_in_child, args=(factory, child_end), daemon=True
        )
        self.port = 0

    def start(self) -> Self:
        self._process.start()
        if not self._control.poll(60):
            self._process.kill()
            raise RuntimeError("the server process did not start within 60 s")
        started = self._control.recv()
        if isinstance(started, str):
            self._process.join(10)
            raise RuntimeError(f"the server process failed to start: {started}")
        self.port = int(started)
        return self

    def stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self._control.send("stop")
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(10)
        self._control.close()


def _serve_in_child(factory: Callable[[], _Server], control: Connection) -> None:
    try:
        server = factory()
        server.start()
    except Exception as exc:  # reported to the parent, which raises it
        control.send(f"{type(exc).__name__}: {exc}")
        return
    control.send(server.port)
    with contextlib.suppress(EOFError, OSError):
        control.recv()  # "stop", or the parent is gone
    server.stop()


def metered_proxy_process(
    kind: type[MeteredProxy], target_host: str, target_port: int
) -> tuple[ServerProcess, SharedMeter]:
    """A counting proxy in its own process, and the meter to set its delay and read it."""
    context = multiprocessing.get_context("spawn")
    delay = context.Value("d", 0.0)
    count = context.Value("q", 0)
    meter = SharedMeter(delay, count)
    return ServerProcess(partial(kind, target_host, target_port, meter=meter)), meter
