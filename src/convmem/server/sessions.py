"""MCP protocol sessions bound to the client that opened them, for the stateful mode of
Streamable HTTP (``CONVMEM_HTTP_SESSIONS=stateful``).

The SDK keeps sessions by id alone: any client that knows another's ``Mcp-Session-Id``
could use or end (``DELETE``) it. This wrapper remembers which authenticated client
each session id was issued to and answers 404, as for an unknown session, when another
client presents it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

from convmem.server.auth import current_owner
from convmem.server.headers import SESSION_ID, single

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_REMEMBERED = 100_000  # the SDK keeps at most 10,000 sessions by default


class SessionsBoundToClients:
    def __init__(self, app: ASGIApp, *, max_remembered: int = MAX_REMEMBERED) -> None:
        self.app = app
        self.max_remembered = max_remembered
        self._owners: OrderedDict[str, str | None] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        owner = current_owner.get()
        presented = single(scope["headers"], SESSION_ID) or ""  # repeated: refused before
        if presented and presented in self._owners and self._owners[presented] != owner:
            response = JSONResponse(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32001, "message": "Session not found"},
                },
                status_code=404,
            )
            await response(scope, receive, send)
            return

        async def remember(message: Message) -> None:
            if message["type"] == "http.response.start":
                issued = dict(message.get("headers", [])).get(SESSION_ID)  # the SDK's own
                if issued:
                    self._remember(issued.decode("latin-1"), owner)
                if scope["method"] == "DELETE" and presented and message["status"] < 300:
                    self._owners.pop(presented, None)
            await send(message)

        await self.app(scope, receive, remember)

    def _remember(self, session_id: str, owner: str | None) -> None:
        self._owners[session_id] = owner
        self._owners.move_to_end(session_id)
        while len(self._owners) > self.max_remembered:
            self._owners.popitem(last=False)
