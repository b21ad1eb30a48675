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
    # pal-mcp-server, on the wire: its own dict loses the thread on restart; convmem
    # keeps it through a restart and an empty Redis, and writes once per pal write.
    pal = {p["system"]: p for p in data["pal"]}
    assert pal["pal's own dict (in process)"]["new_process_store"] is None
    kv = pal["whole-thread key-value store (Redis GET/SETEX)"]
    assert kv["pal_sets_warm"] >= 1
    assert kv["warm_store"] == 0
    assert kv["warm_redis"] >= kv["pal_gets_warm"] + kv["pal_sets_warm"]
    convmem = pal["convmem pal (PostgreSQL + Redis)"]
    assert convmem["cold_store"] is not None
    assert convmem["warm_store"] >= kv["pal_sets_warm"]  # each pal write reaches the store
    # Prompt-prefix stability: the text-blob history shares almost nothing between two
    # requests; native messages share most of it.
    assert len(data["prefix"]) == 4
    assert all(p["before"] < 0.1 < 0.5 < p["after"] for p in data["prefix"])
    # Encryption at rest costs no round trip: counted at the proxy, warm 1, cold 2.
    encryption = {e["state"]: e for e in data["encryption"]}
    assert set(encryption) == {"warm (L1)", "cold"}
    assert encryption["warm (L1)"]["round_trips_on"] == 1.0
    assert encryption["cold"]["round_trips_on"] == 2.0
    assert all(e["off_p50_ms"] > 0 and e["on_p50_ms"] > 0 for e in encryption.values())
    # Agents SDK sessions, counted on the wire: convmem's networked session makes 4 round
    # trips per agent turn (a store write and a Redis script per add_items), the SDK's more.
    agents = {a["system"]: a for a in data["agents"]}
    assert agents["ConvmemSession (SQLite, L1)"]["round_trips"] == 2.0
    assert agents["ConvmemSession (PostgreSQL + Redis)"]["round_trips"] == 4.0
    assert agents["Agents SDK RedisSession"]["round_trips"] > 4.0
    assert agents["Agents SDK SQLAlchemySession (PostgreSQL, asyncpg)"]["round_trips"] > 4.0
    assert agents["Agents SDK SQLiteSession (file)"]["round_trips"] == -1.0  # not countable
    report = (out / "BENCHMARKS.md").read_text()
    assert "## OpenAI Agents SDK sessions: the SDK's own against ConvmemSession" in report
    assert "## Encryption at rest: a continued request with it off and on" in report
    assert "## Prompt-prefix stability" in report
    assert "## pal-mcp-server: round trips of one continued `chat` request" in report
    assert "## Targets" in report
    assert "| convmem, cold |" in report
    assert "| supabase | + Redis, L2 hit (new instance) |" in report
    assert "## Peak memory per system" in report
    assert "## Store.append alone, no cache, by path" in report
