"""``make soak`` in short: the driver runs end to end through HAProxy against one and
three instances and reports what it promises (it asserts no time)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from convmem_bench import soak
from convmem_bench.endurance import FAULTS
from convmem_bench.pgbouncer import free_port

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def test_a_short_soak_runs_and_reports(tmp_path: Path) -> None:
    document = tmp_path / "BENCHMARKS.md"
    document.write_text("# convmem benchmarks\n\nearlier figures\n")
    command = [
        sys.executable,
        "-m",
        "convmem_bench.soak",
        "--seconds=2",
        "--warm-up=1",
        "--clients=4",
        "--instances=1,3",
        f"--out={tmp_path}",
        f"--document={document}",
    ]
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR)}
    for _ in range(2):  # the second run replaces the section the first wrote
        result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "soak.json").read_text())
    assert [r["instances"] for r in rows] == [1, 3]
    for row in rows:
        assert row["errors"] == 0, row
        assert row["requests"] > 0
        assert len(row["rss_start_mib"]) == len(row["rss_end_mib"]) == row["instances"]
        assert all(mib > 0 for mib in row["rss_end_mib"])
        assert row["redis_clients"] > 0
        assert row["postgres_connections"] > 0
    text = document.read_text()
    assert text.startswith("# convmem benchmarks\n\nearlier figures")
    assert text.count("## Soak:") == 1


def test_an_instance_whose_port_was_taken_starts_again_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port the harness chose is taken before the server binds it (as on a busy
    machine): that server exits, and the instance counts as started only on a port its
    own output names, never on the other process's /health."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    squatter = taken.getsockname()[1]
    ports = iter([squatter, free_port()])
    monkeypatch.setattr(soak, "free_port", lambda: next(ports))
    env = {**os.environ, "CONVMEM_STORE_URL": f"sqlite:///{tmp_path}/soak.db"}
    try:
        with soak.instances(1, env) as running:
            ((name, instance),) = running.items()
            assert name != f"i1:{squatter}"
            assert instance.rss_mib() > 0
    finally:
        taken.close()
    with pytest.raises(RuntimeError, match="exited"):
        instance.rss_mib()  # stopped with the context: an error, never a 0


def test_a_short_endurance_run_strikes_every_fault_and_loses_nothing(tmp_path: Path) -> None:
    document = tmp_path / "RELIABILITY.md"
    document.write_text("# convmem reliability\n\nthe chaos suite's figures\n")
    command = [
        sys.executable,
        "-m",
        "convmem_bench.endurance",
        "--minutes=0.5",
        "--fault-every=6",
        "--sample-every=3",
        "--clients=4",
        f"--out={tmp_path}",
        f"--document={document}",
    ]
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "endurance.json").read_text())
    assert {fault for _, fault, _ in report["faults"]} == set(FAULTS)
    assert report["lost_chats"] == 0
    assert report["errors_outside_faults"] == 0
    assert report["acknowledged_chats"] == report["requests"] > 0
    assert report["checked_prompts"] > 0
    assert all(min(s["rss_mib"]) > 0 and min(s["fds"]) > 0 for s in report["samples"])
    text = document.read_text()
    assert text.startswith("# convmem reliability\n\nthe chaos suite's figures")
    assert text.count("## Endurance:") == 1
