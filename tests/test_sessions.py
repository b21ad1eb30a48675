"""Stateful MCP sessions: bound to their client, and bounded per client with idle ones
forgotten (``convmem.server.sessions``), against a stand-in of the SDK's app that issues
a session id to each request without one (the live tests use the real SDK)."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from convmem.server.auth import current_owner
from convmem.server.sessions import SessionsBoundToClients
from tests.support.clock import FakeTimer


class IssuingApp:
    """A new session id for each request without one; 200 for every request."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json")]
        if not any(key == b"mcp-session-id" for key, _ in scope["headers"]):
            headers.append((b"mcp-session-id", f"s{next(self._ids)}".encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})


class AsOwner:
    """Sets the request's owner from an ``X-Owner`` header, as the token check does."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        owner = dict(scope["headers"]).get(b"x-owner", b"").decode() or None
        reset = current_owner.set(owner)
        try:
            await self.app(scope, receive, send)
        finally:
            current_owner.reset(reset)


async def test_a_client_at_its_bound_gets_a_session_again_once_one_idled_out() -> None:
    clock = FakeTimer()
    sessions = SessionsBoundToClients(IssuingApp(), per_client=2, idle_seconds=60, timer=clock)
    transport = httpx.ASGITransport(app=AsOwner(sessions))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

        async def post(owner: str, session: str | None = None) -> httpx.Response:
            headers = {"x-owner": owner} | ({"mcp-session-id": session} if session else {})
            return await http.post("/mcp", headers=headers, content=b"{}")

        await post("alice")  # s1 at 0 s
        clock.now += 30
        second = (await post("alice")).headers["mcp-session-id"]  # s2 at 30 s
        assert (await post("alice")).status_code == 429
        assert (await post("bob")).status_code == 200  # the bound is alice's alone
        clock.now += 31  # s1 idle for 61 s: forgotten (the SDK closes it too); s2 is not
        assert (await post("alice")).status_code == 200
        assert (await post("alice")).status_code == 429
        assert (await post("alice", second)).status_code == 200  # used: kept longer
        clock.now += 39  # s2 used 39 s ago, s3 opened 39 s ago: both still open
        assert (await post("alice")).status_code == 429
        assert (await post("bob", second)).status_code == 404  # alice's, unknown to bob
