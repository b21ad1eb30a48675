"""A redis-server of its own on a free port, for fault tests and the endurance run: it may
be killed, hung and restarted on the same port without touching the machine's shared
Redis."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from convmem_bench.pgbouncer import free_port, wait_for_port


class RedisServer:
    """A redis-server of the test's own on a free port, for fault tests: it may be killed
    and restarted on the same port without touching the machine's shared Redis."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="convmem-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def pause(self) -> None:
        """SIGSTOP: the server hangs with its sockets open, as a stuck Redis does."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
