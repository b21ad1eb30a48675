"""The bench's counting proxies: what they count is what crossed the wire."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler

import httpx
import psycopg
import pytest

from convmem_bench.httpserver import BackgroundHTTPServer
from convmem_bench.net import (
    HttpWireProxy,
    PgWireProxy,
    ServerProcess,
    metered_proxy_process,
)
from tests.support.services import PG_HOST, PG_PORT, PG_USER


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_http_proxy_counts_requests_on_a_kept_alive_connection() -> None:
    server = BackgroundHTTPServer(_Echo).start()
    proxy = HttpWireProxy("127.0.0.1", server.port).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}") as client:
            bodies = [b"", b"x", b"{}" * 40_000]  # the last spans many reads
            for body in bodies:
                assert client.post("/rpc/f", content=body).content == body
            assert proxy.round_trips == 3
            proxy.delay = 1.0
            _assert_held(lambda: client.post("/rpc/f", content=b"late").content == b"late")
            assert proxy.round_trips == 4
    finally:
        proxy.stop()
        server.stop()


def test_a_proxy_in_its_own_process_shares_its_meter() -> None:
    process, meter = metered_proxy_process(PgWireProxy, PG_HOST, PG_PORT)
    process.start()
    try:
        url = f"postgresql://{PG_USER}@127.0.0.1:{process.port}/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            before = meter.round_trips
            for n in range(3):
                conn.execute("SELECT %s::int", (n,)).fetchone()
            assert meter.round_trips - before == 3
            meter.delay = 1.0
            _assert_held(lambda: conn.execute("SELECT 1").fetchone() == (1,))
    finally:
        process.stop()


def test_a_server_that_cannot_start_says_why() -> None:
    server = ServerProcess(_refuses)
    with pytest.raises(RuntimeError, match="no such target"):
        server.start()
    server.stop()


def _assert_held(round_trip: Callable[[], bool]) -> None:
    """The round trip is held by the proxy's delay (no answer yet), then answered in full."""
    with ThreadPoolExecutor(1) as worker:
        answered = worker.submit(round_trip)
        with pytest.raises(FutureTimeout):
            answered.result(timeout=0.2)  # held: the delay is 1 s
        assert answered.result(timeout=30)


def _refuses() -> HttpWireProxy:
    raise OSError("no such target")
