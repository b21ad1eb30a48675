"""A local stand-in of Supabase's REST gateway (PostgREST), for the requests SupabaseStore makes.

Supabase's hosted gateway cannot run here (no network), so the tests and ``convmem
bench`` run ``SupabaseStore`` against this stand-in instead; it is named as one wherever
a figure comes from it. This stand-in answers ``POST
/rest/v1/rpc/<function>`` the way PostgREST does: it checks the ``apikey`` and
bearer headers, runs the SQL function on the real PostgreSQL as ``service_role``
(so row-level security and grants apply) in one transaction, and returns its JSON
result, or PostgREST's error body (``code``, ``message``, ``details``, ``hint``).
It counts requests, and can inject the transport faults of a real deployment.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from convmem_bench.httpserver import BackgroundHTTPServer

SERVICE_KEY = "standin-service-role-key"
SUPABASE_ROLES = ("anon", "authenticated", "service_role")
_RETURNS_SET = "SELECT bool_or(proretset) FROM pg_proc WHERE proname = %s"


def create_supabase_roles(admin: psycopg.Connection[Any]) -> None:
    """The roles every Supabase project has (cluster-wide: created once, kept)."""
    for role in SUPABASE_ROLES:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))


class PostgrestStandIn(BackgroundHTTPServer):
    def __init__(self, conninfo: str, *, service_key: str = SERVICE_KEY) -> None:
        self.service_key = service_key
        self.requests: Counter[str] = Counter()
        # Faults for the next requests, in order: "drop_after_commit", "503", "timeout".
        self.faults: list[str] = []
        self.stall_seconds = 2.0
        self._lock = threading.Lock()
        self._set_returning: dict[str, bool] = {}
        self.pool = ConnectionPool(conninfo, min_size=1, max_size=20, open=True)
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real gateway
            # Headers and body leave in two writes: with Nagle's algorithm on, the body
            # waits for the client's delayed ACK, 40 ms on Linux.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                standin._handle(self)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"supabase+http://127.0.0.1:{self.port}"

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def stop(self) -> None:
        super().stop()
        self.pool.close()

    def _next_fault(self) -> str | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length", "0"))
        body = handler.rfile.read(length)
        prefix = "/rest/v1/rpc/"
        if not handler.path.startswith(prefix):
            _reply(
                handler,
                404,
                {"code": "PGRST125", "message": "Invalid path", "details": None, "hint": None},
            )
            return
        function = handler.path[len(prefix) :].split("?")[0]
        with self._lock:
            self.requests[function] += 1
        if (
            handler.headers.get("apikey") != self.service_key
            or handler.headers.get("authorization") != f"Bearer {self.service_key}"
        ):
            _reply(
                handler,
                401,
                {"code": "PGRST301", "message": "Invalid API key", "details": None, "hint": None},
            )
            return
        fault = self._next_fault()
        if fault == "503":
            handler.send_response(503)
            handler.send_header("content-type", "text/html")
            handler.send_header("content-length", "19")
            handler.end_headers()
            handler.wfile.write(b"Service Unavailable")
            return
        status, payload = self._call(function, json.loads(body or b"{}"))
        if fault == "drop_after_commit":
            handler.close_connection = True  # the write committed; the answer never leaves
            return
        if fault == "timeout":
            time.sleep(self.stall_seconds)  # the client gives up before this answer
        _reply(handler, status, payload)

    def _returns_set(self, conn: psycopg.Connection[Any], function: str) -> bool:
        known = self._set_returning.get(function)
        if known is None:
            row = conn.execute(_RETURNS_SET, (function,)).fetchone()
            known = self._set_returning[function] = bool(row and row[0])
        return known

    def _call(self, function: str, args: dict[str, Any]) -> tuple[int, Any]:
        # Values go as untyped text, so PostgreSQL types them from the function's signature.
        values = [
            None if v is None else json.dumps(v) if isinstance(v, dict | list) else str(v)
            for v in args.values()
        ]
        call = sql.SQL("{}({})").format(
            sql.Identifier(function),
            sql.SQL(", ").join(sql.SQL("{} => %s").format(sql.Identifier(k)) for k in args),
        )
        try:
            with self.pool.connection() as conn, conn.transaction():
                conn.execute("SET LOCAL ROLE service_role")
                # As PostgREST does: a set-returning function answers a JSON array of its
                # rows, any other its one value.
                if self._returns_set(conn, function):
                    query = sql.SQL("SELECT coalesce(json_agg(r), '[]') FROM {} r").format(call)
                else:
                    query = sql.SQL("SELECT {}").format(call)
                row = conn.execute(query, values).fetchone()
        except psycopg.Error as exc:
            diag = exc.diag
            code = diag.sqlstate or "XX000"
            status = {"23505": 409, "42883": 404, "42501": 403}.get(code, 400)
            if code == "42883":
                code = "PGRST202"
            return status, {
                "code": code,
                "message": diag.message_primary or str(exc),
                "details": diag.message_detail,
                "hint": diag.message_hint,
            }
        return 200, None if row is None else row[0]


def _reply(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    data = json.dumps(payload, default=str).encode()
    try:
        handler.send_response(status)
        handler.send_header("content-type", "application/json; charset=utf-8")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: as a gateway
        handler.close_connection = True
