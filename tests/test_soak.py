"""``make soak`` in short: the driver runs end to end through HAProxy against one and
three instances and reports what it promises (it asserts no time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
