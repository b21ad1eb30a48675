"""``convmem serve``: one process serving Streamable HTTP MCP at ``/mcp``, the WebSocket
daemon at ``/ws``, ``GET /health`` and ``GET /metrics``; and ``convmem mcp`` on stdio."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from convmem.errors import ConfigurationError, RepeatedHeaderError
from convmem.memory import Memory
from convmem.providers import provider_for
from convmem.server.auth import TokenTable, current_owner
from convmem.server.headers import bearer_token, check_single
from convmem.server.json_rpc_ids import JsonRpcIdsChecked
from convmem.server.mcp_app import build_mcp
from convmem.server.metrics import CONTENT_TYPE, Metrics
from convmem.server.service import ConversationService
from convmem.server.sessions import SessionsBoundToClients
from convmem.server.ws import WebSocketDaemon

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

    from convmem.providers.base import Provider
    from convmem.settings import Settings

log = logging.getLogger("convmem.server")

# Probes, scrapers and a browser's first look; they reveal no threads.
OPEN_PATHS = frozenset({"/", "/health", "/metrics"})
_INDEX = {
    "name": "convmem",
    "mcp": "/mcp (Streamable HTTP: POST JSON-RPC with 'Authorization: Bearer <token>')",
    "websocket": "/ws, or any path (the daemon protocol or MCP JSON-RPC)",
    "health": "/health",
    "metrics": "/metrics",
}


class TokenAuth:
    """Bearer-token auth for HTTP; the token's client becomes the owner of the request."""

    def __init__(self, app: ASGIApp, tokens: TokenTable) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            try:
                check_single(scope["headers"])
            except RepeatedHeaderError as exc:
                await _refuse_repeated(scope, receive, send, str(exc))
                return
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        owner = self.tokens.owner_of(bearer_token(scope["headers"]))
        if self.tokens.required and owner is None:
            response = JSONResponse(
                {"error": "unauthorized", "message": "send 'Authorization: Bearer <token>'"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        reset = current_owner.set(owner)
        try:
            await self.app(scope, receive, send)
        finally:
            current_owner.reset(reset)


async def _refuse_repeated(scope: Scope, receive: Receive, send: Send, message: str) -> None:
    if scope["type"] == "websocket":  # closed before the upgrade: the client sees 403
        await send({"type": "websocket.close", "code": 1008, "reason": message})
        return
    response = JSONResponse(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}},
        status_code=400,
    )
    await response(scope, receive, send)


def build_app(
    settings: Settings, *, memory: Memory | None = None, provider: Provider | None = None
) -> Starlette:
    """The whole HTTP face. What it builds (the Memory, the provider when not given) it
    opens and closes in the app's lifespan; what it is given it leaves as it is."""
    owned: list[Memory | Provider] = []
    if memory is None:
        memory = Memory.from_settings(settings)
        owned.append(memory)
    if provider is None:
        provider = provider_for(settings.provider)
        owned.append(provider)
    tokens = TokenTable.from_settings(
        settings.server.token, settings.server.client_tokens, settings.server.operators
    )
    service = ConversationService.from_settings(memory, provider, settings)
    metrics = Metrics(memory)
    mcp = build_mcp(service, metrics=metrics, transport="http", is_operator=tokens.is_operator)
    # Stateless by default: any instance answers any request (threads live in the store
    # and the cache), so instances scale behind any balancer and survive restarts. The
    # stateful mode keeps MCP sessions in this process, bound to the client that opened
    # them, and needs sticky routing.
    stateless = settings.server.http_sessions == "stateless"
    sdk_http = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        host=settings.server.host,
        stateless_http=stateless,
        session_idle_timeout=settings.server.http_session_idle_seconds,
    )
    checked = JsonRpcIdsChecked(sdk_http)
    mcp_http: ASGIApp = (
        _NoStreamWithoutSession(checked)
        if stateless
        else SessionsBoundToClients(
            checked,
            per_client=settings.server.http_sessions_per_client,
            idle_seconds=settings.server.http_session_idle_seconds,
        )
    )
    daemon = WebSocketDaemon(
        build_mcp(service, metrics=metrics, transport="ws", is_operator=tokens.is_operator),
        tokens,
        hello_timeout=settings.daemon.hello_timeout_seconds,
        max_frame_bytes=settings.daemon.max_frame_bytes,
        progress_seconds=settings.daemon.progress_seconds,
        call_timeout_seconds=settings.daemon.call_timeout_seconds,
        send_timeout_seconds=settings.daemon.send_timeout_seconds,
    )

    async def health(request: Request) -> Response:
        # Open to probes, but the store's own words only to an authenticated client.
        caller = tokens.owner_of(bearer_token(request.scope["headers"]))
        report = await service.health(detailed=tokens.required and caller is not None)
        return JSONResponse(
            report.model_dump(exclude_none=True), status_code=200 if report.ok else 503
        )

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def index(request: Request) -> Response:
        return JSONResponse(_INDEX)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if memory in owned:
            await memory.open()
        try:
            async with mcp.session_manager.run():
                log.info(
                    "convmem serving on %s:%d (provider %s)",
                    settings.server.host,
                    settings.server.port,
                    provider.name,
                )
                try:
                    yield
                finally:
                    await service.aclose()
        finally:
            for part in reversed(owned):
                await part.aclose()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
            Route("/", index, methods=["GET"]),
            WebSocketRoute("/ws", daemon.handle),
            Mount("/", app=_WebSocketsTo(daemon, mcp_http)),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(TokenAuth, tokens=tokens)
    return app


class _NoStreamWithoutSession:
    """Stateless Streamable HTTP answers ``GET /mcp`` with 405, as the MCP specification
    lets a server that offers no event stream there: without a session there is nothing
    the server could send on it, and the SDK would hold the stream open forever (a
    browser or a plain ``curl`` would hang)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/mcp":
            response = JSONResponse(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {
                        "code": -32000,
                        "message": "Method Not Allowed: this server is stateless and offers no"
                        " event stream at GET /mcp; POST JSON-RPC requests to /mcp",
                    },
                },
                status_code=405,
                headers={"Allow": "POST"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _WebSocketsTo:
    """Every WebSocket upgrade goes to the daemon, whatever its path (the original
    daemon's clients dial ``ws://HOST:PORT`` with no path); HTTP goes to the MCP app."""

    def __init__(self, daemon: WebSocketDaemon, http: ASGIApp) -> None:
        self.daemon = daemon
        self.http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.daemon.handle(WebSocket(scope, receive, send))
        else:
            await self.http(scope, receive, send)


def warn_if_exposed(settings: Settings) -> str | None:
    """A loud warning when the server listens beyond loopback without a token."""
    if settings.server.token or settings.server.client_tokens:
        return None
    try:
        loopback = ipaddress.ip_address(settings.server.host).is_loopback
    except ValueError:
        loopback = settings.server.host == "localhost"
    if loopback:
        return None
    return (
        f"WARNING: convmem listens on {settings.server.host}:{settings.server.port} WITHOUT A"
        " TOKEN: anyone who can reach this address can read and write every conversation."
        " Set CONVMEM_TOKEN."
    )


async def serve_http(settings: Settings, *, on_listening: Callable[[], None]) -> None:
    """``convmem serve``: bind the port, open the store (and check the keys), then call
    ``on_listening`` and serve until stopped. A busy port or a store that cannot be
    opened raises ``ConvMemError`` before anything is announced."""
    import uvicorn  # the server's own dependency; the library does not need it

    from convmem.server.http_protocol import HeaderDeadlineH11Protocol

    listener = _bound_socket(settings.server.host, settings.server.port)
    try:
        async with Memory.from_settings(settings) as memory:
            provider = provider_for(settings.provider)
            try:
                config = uvicorn.Config(
                    build_app(settings, memory=memory, provider=provider),
                    http=HeaderDeadlineH11Protocol.with_timeout(
                        settings.server.http_header_timeout_seconds
                    ),
                    ws_max_size=ws_receive_limit(settings.daemon.max_frame_bytes),
                    # No permessage-deflate: a compressed frame of a few KB inflates to the
                    # whole receive limit before it can be refused (a decompression bomb
                    # of 33 MB per frame). Clients that offer it fall back to plain frames.
                    ws_per_message_deflate=False,
                    log_level="warning",
                )
                on_listening()
                await uvicorn.Server(config).serve(sockets=[listener])
            finally:
                await provider.aclose()
    finally:
        listener.close()


def ws_receive_limit(max_frame_bytes: int) -> int:
    """The largest WebSocket message the protocol reads in. A frame a little over
    ``max_frame_bytes`` is read to be answered with an error frame that names its request;
    one larger still is refused by its header (close 1009, as the original daemon's
    websockets server did), before any of it is read: ten clients sending 60 MB frames
    at once must not hold 60 MB each (nor, compressed, inflate them: see ``serve``)."""
    return max_frame_bytes + min(max_frame_bytes, 1024 * 1024)


def _bound_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or a ``ConfigurationError`` that says which
    setting to change."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigurationError(
            f"cannot listen on {host!r}: {exc.strerror}; set CONVMEM_HOST (or --host) to an"
            " address of this machine, such as 127.0.0.1"
        ) from None
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {port} on {host} is in use by another process: stop it, or set"
                " CONVMEM_PORT (or --port) to a free port"
            ) from None
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror}; set CONVMEM_HOST and"
            " CONVMEM_PORT (or --host, --port) to an address this process may bind"
        ) from None
    listener.set_inheritable(True)
    return listener


async def serve_stdio(settings: Settings) -> None:
    """MCP over stdin/stdout for clients that launch their server as a subprocess."""
    provider = provider_for(settings.provider)
    async with Memory.from_settings(settings) as memory:
        service = ConversationService.from_settings(memory, provider, settings)
        try:
            await build_mcp(service, metrics=Metrics(memory), transport="stdio").run_stdio_async()
        finally:
            await service.aclose()
            await provider.aclose()
