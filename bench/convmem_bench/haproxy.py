"""HAProxy (Debian's package, installed by ``make deps``) in front of several
``convmem serve`` processes, configured from ``deploy/haproxy.cfg`` with free loopback
ports and a fast health check; shared by the tests and ``make soak``."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from string import Template

import httpx2

from convmem_bench.pgbouncer import free_port

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"  # in the repository


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if found is None:
        raise RuntimeError("haproxy is not installed: run `make deps` (apt-get install haproxy)")
    return found


class HAProxy:
    def __init__(self, backends: dict[str, int], *, check_interval: str = "200ms") -> None:
        self.backends = backends  # server name -> port on 127.0.0.1
        self.port = free_port()
        self.stats_port = free_port()
        self.check_interval = check_interval
        self._folder = Path(tempfile.mkdtemp(prefix="convmem-haproxy-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HAProxy:
        servers = "\n".join(
            f"    server {name} 127.0.0.1:{port} check" for name, port in self.backends.items()
        )
        config = Template(CONFIG.read_text()).substitute(
            BIND=f"127.0.0.1:{self.port}",
            STATS_BIND=f"127.0.0.1:{self.stats_port}",
            CHECK_INTERVAL=self.check_interval,
            SERVERS=servers,
        )
        path = self._folder / "haproxy.cfg"
        path.write_text(config)
        self._process = subprocess.Popen(
            [haproxy_binary(), "-f", str(path), "-db"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.wait_until(lambda s: all(v == "UP" for v in s.values()), "every instance UP")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            if self._process.stderr:
                self._process.stderr.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def rows(self) -> list[dict[str, str]]:
        """HAProxy's statistics, one row per proxy and server (its CSV)."""
        text = httpx2.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text
        return list(csv.DictReader(io.StringIO(text.lstrip("# "))))

    def status(self) -> dict[str, str]:
        """Each instance's state as HAProxy sees it: UP, DOWN, …"""
        return {
            row["svname"]: row["status"].split()[0]
            for row in self.rows()
            if row["pxname"] == "convmem" and row["svname"] in self.backends
        }

    def sessions(self, column: str = "stot") -> dict[str, int]:
        """Per instance: total sessions (``stot``) or current ones (``scur``)."""
        return {
            row["svname"]: int(row[column] or 0)
            for row in self.rows()
            if row["pxname"] == "convmem" and row["svname"] in self.backends
        }

    def wait_until(
        self, condition: Callable[[dict[str, str]], bool], what: str, timeout: float = 20.0
    ) -> None:
        """Until ``condition`` holds of the instances' states (polled, as HAProxy checks)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition(self.status()):
                    return
            except httpx2.HTTPError:
                pass
            if self._process is not None and self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"haproxy exited: {error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"haproxy: not {what} within {timeout} s: {self.status()}")
            time.sleep(0.05)
