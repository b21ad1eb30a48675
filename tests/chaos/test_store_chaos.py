"""Two processes on a PostgreSQL cluster of the test's own, under load, while it is
restarted, stopped for a while, or hung. Calls may fail while it is gone (fast, and
saying to retry); none may fail a moment after it is back; no acknowledged turn may be
lost and no process crash."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.harness import FULL, Outcome, analyse, run_workers, scaled, two_workers
from tests.chaos.test_redis_chaos import THREADS, make_threads, stored_keys
from tests.support.services import PostgresServer

FAULTS = {
    "restart": "PostgreSQL restarted (immediate stop, start at once)",
    "down": "PostgreSQL stopped a while, then started",
    "hang": "PostgreSQL hung (every process SIGSTOPped), then resumed",
}
SETTINGS = {
    "store_timeout_seconds": 1.0,
    "store_breaker_reset_seconds": 0.5,
    "pg_pool_timeout_seconds": 1.0,
    "pg_connect_timeout_seconds": 1,
}
RECOVERY = 3.0  # seconds after the fault ends within which calls must succeed again
OUTAGE = 2.0  # seconds the store is down or hung: longer than a call's deadline
LEASE = 1.0


def faults(
    postgres: PostgresServer, kind: str, seconds: float, ended: list[float]
) -> Callable[[], None]:
    def inject() -> None:
        cycles = 3 if FULL else 1
        period = seconds / (cycles + 1)
        for _ in range(cycles):
            time.sleep(period * 0.4)
            if kind == "restart":
                postgres.stop()
                postgres.start()
            elif kind == "down":
                postgres.stop()
                time.sleep(OUTAGE)
                postgres.start()
            else:
                postgres.pause()
                time.sleep(OUTAGE)
                postgres.resume()
            ended.append(time.monotonic())
            time.sleep(period * 0.4)

    return inject


@pytest.mark.parametrize("kind", list(FAULTS))
def test_two_processes_under_load_through_a_store_fault(
    kind: str, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    postgres = PostgresServer().start()
    ended: list[float] = []
    try:
        threads = make_threads(postgres.url)
        seconds = scaled(8.0, 45.0)
        plans = two_workers(
            tmp_path,
            store_url=postgres.url,
            cache_url=redis_url,
            prefix=redis_prefix,
            thread_ids=threads,
            seconds=seconds,
            lease=LEASE,
            settings=SETTINGS,
        )
        results = run_workers(plans, faults(postgres, kind, seconds, ended))
        keys = stored_keys(postgres.url, threads)
    finally:
        postgres.remove()
    outcome = analyse(
        Outcome(
            scenario=f"two instances, store {kind}",
            load=f"2 processes × {seconds:g} s, {THREADS} threads, 30% appends",
            faults=FAULTS[kind] + (" ×3" if FULL else ""),
            lease_seconds=LEASE,
        ),
        results,
        keys,
    )
    if outcome.last_failure:
        outcome.recovery_seconds = max(0.0, outcome.last_failure - ended[-1])
    outcome.record()
    assert outcome.crashes == 0
    assert outcome.lost_turns == 0
    assert set(outcome.failures) <= {"StoreUnavailableError"}, outcome.failures
    assert (outcome.recovery_seconds or 0.0) <= RECOVERY, outcome
    assert outcome.worst_stale_seconds <= LEASE, outcome  # Redis is fine: its bound holds
