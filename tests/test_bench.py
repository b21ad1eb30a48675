"""The benchmark's quick mode still runs end to end (it asserts no time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def test_bench_quick_runs_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "convmem_bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(BENCH_DIR)},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "results.json").read_text())
    flows = {f["flow"] for f in data["flows"]}
    assert {"convmem, warm (L1)", "convmem, cold", "seed before the fix (7 calls)"} <= flows
    before = next(f for f in data["flows"] if f["flow"].startswith("seed before"))
    assert before["round_trips"] == 7.0  # counted on the wire by the proxy
    # Every store, every cache state; round trips counted at each store's proxy (HTTP
    # requests for the Supabase stand-in, worker hops for SQLite).
    stores = {(f["store"], f["flow"]): f for f in data["stores"]}
    assert {store for store, _ in stores} == {"sqlite", "postgres", "pgbouncer", "supabase"}
    for (store, flow), result in stores.items():
        expected = 2.0 if flow.split(" · ")[0].endswith("cold") else 1.0
        assert result["round_trips"] == expected, (store, flow, result)
    memory = {m["flow"]: m for m in data["memory"]}
    assert "convmem, warm (L1)" in memory
    assert "LangGraph AsyncPostgresSaver" in memory
    assert all(0 < m["baseline_mib"] <= m["peak_mib"] for m in memory.values())
    appends = {a["path"]: a for a in data["store_appends"]}
    assert set(appends) == {"postgres", "pgbouncer"}
    assert all(a["floor_p50_us"] > 0 and a["p50_us_1000_turns"] > 0 for a in appends.values())
    report = (out / "BENCHMARKS.md").read_text()
    assert "## Targets" in report
    assert "| convmem, cold |" in report
    assert "| supabase | + Redis, L2 hit (new instance) |" in report
    assert "## Peak memory per system" in report
    assert "## Store.append alone, no cache, by path" in report
