"""The OpenAI Agents SDK sessions' part of BENCHMARKS.md: the table and its targets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from convmem_bench.results import AgentsSessionResult, Report

CONVMEM_NETWORKED: Final = "ConvmemSession (PostgreSQL + Redis)"
CONVMEM_EMBEDDED: Final = "ConvmemSession (SQLite, L1)"
SDK_EMBEDDED: Final = "Agents SDK SQLiteSession (file)"
SPEEDUP_TARGET: Final = 2.0
TARGET_LATENCIES: Final = (1.0, 10.0)


def agents_targets(report: Report) -> list[tuple[str, str, bool | None]]:
    """Fewest round trips of all; ≥ 2× faster than the fastest SDK session at 1 and 10 ms."""
    rows: list[tuple[str, str, bool | None]] = []
    for (latency, items), group in _groups(report.agents).items():
        convmem = group.get(CONVMEM_NETWORKED)
        sdk = [r for r in group.values() if not r.system.startswith("Convmem")]
        counted = [r for r in sdk if r.round_trips >= 0]
        if convmem is None or not sdk:
            continue
        if latency == 0.0:
            fewest = min(counted, key=lambda r: r.round_trips, default=None)
            if fewest is not None:
                rows.append(
                    (
                        f"Agents SDK sessions, {items} items: fewest round trips per agent turn"
                        " (convmem on PostgreSQL + Redis)",
                        f"{convmem.round_trips:.1f} vs {fewest.round_trips:.1f} ({fewest.system})",
                        convmem.round_trips <= fewest.round_trips,
                    )
                )
        if latency not in TARGET_LATENCIES:
            continue
        networked = [r for r in sdk if r.system != SDK_EMBEDDED]
        fastest = min(networked, key=lambda r: r.p50_ms)
        rows.append(
            (
                f"Agents SDK sessions, {items} items, {latency:g} ms per round trip: convmem on"
                f" PostgreSQL + Redis ≥ {SPEEDUP_TARGET:g}× faster than the fastest networked"
                " SDK session",
                f"{fastest.p50_ms / convmem.p50_ms:.1f}× ({convmem.p50_ms:.2f} vs"
                f" {fastest.p50_ms:.2f} ms, {fastest.system})",
                fastest.p50_ms >= SPEEDUP_TARGET * convmem.p50_ms,
            )
        )
        embedded, sdk_file = group.get(CONVMEM_EMBEDDED), group.get(SDK_EMBEDDED)
        if embedded is not None and sdk_file is not None and latency == TARGET_LATENCIES[0]:
            rows.append(
                (
                    f"Agents SDK sessions, {items} items: convmem on SQLite ≥"
                    f" {SPEEDUP_TARGET:g}× faster than the SDK's SQLiteSession (no network)",
                    f"{sdk_file.p50_ms / embedded.p50_ms:.1f}× ({embedded.p50_ms:.2f} vs"
                    f" {sdk_file.p50_ms:.2f} ms)",
                    sdk_file.p50_ms >= SPEEDUP_TARGET * embedded.p50_ms,
                )
            )
    return rows


def agents_section(report: Report) -> list[str]:
    if not report.agents:
        return []
    concurrency = report.agents[0].concurrency
    lines = [
        "",
        "## OpenAI Agents SDK sessions: the SDK's own against ConvmemSession",
        "",
        "An agent turn is what `Runner.run` does with a session: `get_items()`, `add_items`",
        "of the input, `add_items` of the outputs (`convmem_bench.agents_bench`). Sessions",
        "hold the given number of items before the measured turns. PostgreSQL (the SDK's",
        "`SQLAlchemySession` with asyncpg, and convmem's store) is reached through the same",
        "counting proxy, Redis (the SDK's `RedisSession`, and convmem's L2) through one of its",
        "own that counts round trips (a pipeline once) and holds each one the given latency.",
        "SQLite files have no network: the SDK's `SQLiteSession` round trips are not counted,",
        "convmem's are its worker hops. p50/p99 one turn at a time; turns/s with"
        f" {concurrency} sessions at once.",
        "",
        "| latency | items | session | round trips / turn | p50 | p99 | turns/s (1) |"
        f" p50 ({concurrency}) | p99 ({concurrency}) | turns/s ({concurrency}) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.agents:
        trips = "—" if r.round_trips < 0 else f"{r.round_trips:.1f}"
        lines.append(
            f"| {r.latency_ms:g} ms | {r.items} | {r.system} | {trips} | {r.p50_ms:.2f} ms |"
            f" {r.p99_ms:.2f} ms | {r.turns_per_second:.0f} | {r.p50_ms_concurrent:.2f} ms |"
            f" {r.p99_ms_concurrent:.2f} ms | {r.turns_per_second_concurrent:.0f} |"
        )
    lines += ["", "Targets, as this run measured them:", ""]
    for target, measured, met in agents_targets(report):
        verdict = "-" if met is None else ("met" if met else "**not met**")
        lines.append(f"- {target}: {measured} — {verdict}")
    lines += [
        "",
        "Where the time goes. `ConvmemSession` on PostgreSQL + Redis makes 4 round trips per",
        "agent turn: `get_items` is an L1 hit (0), each `add_items` is one store write (a",
        "PL/pgSQL function: atomic, ordered, idempotent) and one Redis script that changes",
        "the cached copy in place and announces the write in the same round trip. The",
        "SDK's `RedisSession` makes 9 (reads and a pipelined write per call, each counted",
        "once), `SQLAlchemySession` 13 (a SELECT to find the session, the INSERT, the",
        "UPDATE of its timestamp and the transaction around them). With no added latency",
        "`RedisSession` is about as fast as convmem's networked session: its round trips cost",
        "Redis microseconds each, while convmem's store write does about a millisecond of",
        "server work on this machine. That work is why the 2× target is missed at 1 ms per",
        "round trip; at 10 ms the round trips dominate and the ratio follows their count",
        "(9 / 4). On one machine without a network, convmem on SQLite serves `get_items` from",
        "L1 and writes with one hop to its worker thread; the SDK's `SQLiteSession` reads",
        "the file on every `get_items`, so it gains with the session's length.",
    ]
    return lines


def _groups(
    results: list[AgentsSessionResult],
) -> dict[tuple[float, int], dict[str, AgentsSessionResult]]:
    groups: dict[tuple[float, int], dict[str, AgentsSessionResult]] = {}
    for r in results:
        groups.setdefault((r.latency_ms, r.items), {})[r.system] = r
    return groups
