"""Render RELIABILITY.md from the rows the chaos suite recorded (``make chaos``)."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from convmem_bench import endurance

HEADER = """# convmem reliability

What the chaos suite (`tests/chaos/`) measured in one run of

```sh
make chaos   # CONVMEM_CHAOS=full: each scenario longer, faults repeated, 10,000 fuzz cases each
```

on {machine}. Every fault is real: a Redis or PostgreSQL of the test's own killed,
restarted or hung (SIGSTOP) mid-load, `convmem serve` SIGKILLed, and the instances are
separate OS processes sharing one store and one Redis. `make test` runs the same
scenarios, shorter.

How to read it:

- **lost turns**: acknowledged writes missing from the store at the end (must be 0);
- **stale reads**: reads that returned a version older than one already acknowledged
  when the read began (an invalidation still in flight, allowed); **worst stale window**:
  the longest such lag, which the design bounds by the lease: under any Redis fault, no
  read returns a version older than one acknowledged more than the lease before the read
  began;
- **failed calls**: calls that raised; a Redis fault may fail none, a store outage may
  fail calls while the store is gone, fast and saying to retry (`StoreUnavailableError`);
  **recovery**: from the end of the last fault to the last failed call;
- **crashes**: processes that died on their own.

"""
COLUMNS = (
    "scenario",
    "load",
    "faults",
    "calls",
    "failed calls",
    "lost turns",
    "stale reads",
    "worst stale window (lease)",
    "recovery",
    "crashes",
)


ATTACKS = """
## Attacks tried, and their outcome

The security section of the same run (`tests/chaos/test_attacks.py`): the attacks of an
outside review (two owners' tokens, `convmem serve` on PostgreSQL, Redis and the
database edited directly), each tried again and asserted; `tests/test_redis_tampering.py`
and `tests/test_sealed_places.py` try every variant on every store.

| attack | against | outcome |
|---|---|---|
"""


def render(rows: list[dict[str, object]]) -> str:
    attacks = [row for row in rows if row.get("kind") == "attack"]
    rows = [row for row in rows if row.get("kind") != "attack"]
    lines = [
        HEADER.format(machine=_machine()).rstrip("\n"),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines.extend(_scenario_rows(rows))
    if attacks:
        lines.append(ATTACKS.rstrip("\n"))
        lines.extend(f"| {a['attack']} | {a['target']} | {a['outcome']} |" for a in attacks)
    return "\n".join(lines) + "\n"


def _scenario_rows(rows: list[dict[str, object]]) -> list[str]:
    lines = []
    for row in rows:
        failures = row["failures"] or {}
        failed = f"{row['failed_calls']}" + (
            f" ({', '.join(f'{k} {v}' for k, v in failures.items())})" if failures else ""  # type: ignore[attr-defined]
        )
        lease = row.get("lease_seconds")
        window = (
            f"{float(row['worst_stale_seconds']) * 1000:.0f} ms ({float(lease):g} s)"  # type: ignore[arg-type]
            if lease is not None
            else "-"
        )
        recovery = row.get("recovery_seconds")
        lines.append(
            f"| {row['scenario']} | {row['load']} | {row['faults']} | {row['calls']} "
            f"| {failed} | {row['lost_turns']} of {row['acknowledged_turns']} "
            f"| {row['stale_reads']} of {row['reads']} | {window} "
            f"| {'-' if recovery is None else f'{float(recovery):.2f} s'} | {row['crashes']} |"  # type: ignore[arg-type]
        )
    return lines


def _machine() -> str:
    return f"{platform.machine()}, Python {platform.python_version()}, Linux {platform.release()}"


def main() -> None:
    """``report.py ROWS.jsonl [RELIABILITY.md]``: the document from the rows, keeping the
    endurance section (``make soak-long``) of the one it replaces."""
    rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line]
    text = render(rows)
    kept = endurance.SECTION.of(Path(sys.argv[2])) if len(sys.argv) > 2 else None
    if kept is not None:
        text = text.rstrip("\n") + "\n\n" + kept + "\n"
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
