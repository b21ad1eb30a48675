"""Prometheus metrics: tool calls and latencies, and Memory's counters read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from convmem.memory import Memory

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _MemoryCollector(Collector):
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def collect(self) -> Iterator[Metric]:
        stats = self.memory.stats
        hits = CounterMetricFamily(
            "convmem_cache_hits", "Reads served by a cache layer", labels=["layer"]
        )
        hits.add_metric(["l1"], stats.l1_hits)
        hits.add_metric(["l2"], stats.l2_hits)
        yield hits
        yield CounterMetricFamily(
            "convmem_cache_misses", "Reads that reached the store", value=stats.misses
        )
        trips = CounterMetricFamily(
            "convmem_store_round_trips", "Store round trips", labels=["kind"]
        )
        trips.add_metric(["read"], stats.store_reads)
        trips.add_metric(["write"], stats.store_writes)
        yield trips
        yield CounterMetricFamily(
            "convmem_store_errors", "Failed store calls", value=stats.store_errors
        )
        yield CounterMetricFamily("convmem_l2_errors", "Failed Redis calls", value=stats.l2_errors)
        yield CounterMetricFamily(
            "convmem_l2_corrupt",
            "Redis copies that did not decode (another release's format, tampering):"
            " dropped, and the thread read from the store",
            value=stats.l2_corrupt,
        )
        yield CounterMetricFamily(
            "convmem_decryption_errors",
            "Stored threads that could not be decrypted (missing key, tampering)",
            value=stats.decryption_errors,
        )
        yield CounterMetricFamily(
            "convmem_invalidations_received",
            "Invalidations from other instances",
            value=stats.invalidations_received,
        )
        compactions = CounterMetricFamily(
            "convmem_compactions",
            "Compactions of old turns into a summary, by outcome",
            labels=["outcome"],
        )
        compactions.add_metric(["saved"], stats.compactions)
        compactions.add_metric(["superseded"], stats.compactions_stale)
        compactions.add_metric(["failed"], stats.compaction_failures)
        yield compactions
        circuit = GaugeMetricFamily(
            "convmem_redis_circuit", "Redis circuit state (1 = current)", labels=["state"]
        )
        for state in ("closed", "open", "half_open"):
            circuit.add_metric([state], 1.0 if stats.circuit_state == state else 0.0)
        yield circuit
        yield GaugeMetricFamily(
            "convmem_l1_bytes", "Estimated bytes held by L1", value=stats.l1_bytes
        )
        yield GaugeMetricFamily("convmem_l1_items", "Threads held by L1", value=stats.l1_items)


class Metrics:
    def __init__(self, memory: Memory) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "convmem_requests",
            "Tool calls",
            ["tool", "transport", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "convmem_request_seconds",
            "Tool call latency",
            ["tool", "transport"],
            registry=self.registry,
        )
        self.registry.register(_MemoryCollector(memory))

    @contextmanager
    def observe(self, tool: str, transport: str) -> Iterator[None]:
        start = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            self.latency.labels(tool, transport).observe(time.perf_counter() - start)
            self.requests.labels(tool, transport, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
