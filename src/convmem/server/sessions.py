"""MCP protocol sessions bound to the client that opened them, and bounded per client, for
the stateful mode of Streamable HTTP (``CONVMEM_HTTP_SESSIONS=stateful``).

The SDK keeps sessions by id alone: any client that knows another's ``Mcp-Session-Id``
could use or end (``DELETE``) it. This wrapper remembers which authenticated client
each session id was issued to and answers 404, as for an unknown session, when another
client presents it.

The SDK's bound on sessions is global: one client opening sessions in a loop filled it
and every other client was refused for as long as the sessions lived. Here each client
may hold ``per_client`` sessions used within the last ``idle_seconds`` (the SDK closes a
session idle that long, too); a client at its bound is refused a new one (429) and the
others are not affected.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

from convmem.server.auth import current_owner
from convmem.server.headers import SESSION_ID, single

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_REMEMBERED = 100_000  # the SDK keeps at most 10,000 sessions by default
DEFAULT_PER_CLIENT = 100
DEFAULT_IDLE_SECONDS = 300.0


@dataclass(slots=True)
class _Session:
    owner: str | None
    used_at: float


class SessionsBoundToClients:
    def __init__(
        self,
        app: ASGIApp,
        *,
        per_client: int = DEFAULT_PER_CLIENT,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_remembered: int = MAX_REMEMBERED,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.per_client = per_client
        self.idle_seconds = idle_seconds
        self.max_remembered = max_remembered
        self.timer = timer
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently used first
        self._by_owner: dict[str | None, OrderedDict[str, None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        owner = current_owner.get()
        presented = single(scope["headers"], SESSION_ID) or ""  # repeated: refused before
        known = self._sessions.get(presented) if presented else None
        if known is not None and known.owner != owner:
            await _error(404, -32001, "Session not found")(scope, receive, send)
            return
        if known is not None:
            self._touch(presented)
        elif not presented and scope["method"] == "POST" and self._open(owner) >= self.per_client:
            message = (
                f"this client has {self.per_client} open MCP sessions, its limit: end one"
                f" (DELETE /mcp with its Mcp-Session-Id) or let one idle for"
                f" {self.idle_seconds:g} s"
            )
            await _error(429, -32000, message)(scope, receive, send)
            return

        async def remember(message: Message) -> None:
            if message["type"] == "http.response.start":
                issued = dict(message.get("headers", [])).get(SESSION_ID)  # the SDK's own
                if issued and not presented:
                    self._remember(issued.decode("latin-1"), owner)
                if scope["method"] == "DELETE" and presented and message["status"] < 300:
                    self._forget(presented)
            await send(message)

        await self.app(scope, receive, remember)

    def _open(self, owner: str | None) -> int:
        """How many sessions ``owner`` used within the idle time; older ones are forgotten
        (the SDK has closed them, or is about to)."""
        held = self._by_owner.get(owner)
        if not held:
            return 0
        horizon = self.timer() - self.idle_seconds
        while held:
            oldest = next(iter(held))
            if self._sessions[oldest].used_at > horizon:
                break
            self._forget(oldest)
        return len(held)

    def _remember(self, session_id: str, owner: str | None) -> None:
        self._sessions[session_id] = _Session(owner, self.timer())
        self._by_owner.setdefault(owner, OrderedDict())[session_id] = None
        while len(self._sessions) > self.max_remembered:
            self._forget(next(iter(self._sessions)))

    def _touch(self, session_id: str) -> None:
        session = self._sessions[session_id]
        session.used_at = self.timer()
        self._sessions.move_to_end(session_id)
        self._by_owner[session.owner].move_to_end(session_id)

    def _forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        held = self._by_owner.get(session.owner)
        if held is not None:
            held.pop(session_id, None)
            if not held:
                del self._by_owner[session.owner]


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}},
        status_code=status,
    )
