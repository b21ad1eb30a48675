"""What a benchmark run measured: one ``Report``, written as JSON and rendered as Markdown."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson


@dataclass
class FlowResult:
    flow: str
    latency_ms: float
    p50_ms: float
    p99_ms: float
    round_trips: float  # per request, counted at the proxy
    requests_per_second: float
    turns: int = 50  # turns in each thread before the run
    store: str = "postgres"


@dataclass
class ConcurrencyResult:
    flow: str
    latency_ms: float
    conversations: int
    requests_per_second: float
    round_trips: float  # per request
    store: str = "postgres"


@dataclass
class LayerResult:
    operation: str
    p50_us: float
    floor: str | None = None
    floor_p50_us: float | None = None


@dataclass
class StoreAppendResult:
    """``Store.append`` of one turn without any cache, by thread length, and its floor."""

    path: str  # "postgres" (direct) or "pgbouncer" (transaction mode, no prepared statements)
    p50_us_10_turns: float
    p50_us_1000_turns: float
    floor_p50_us: float  # one psycopg statement doing an append's least work, same path

    @property
    def flatness(self) -> float:
        return self.p50_us_1000_turns / self.p50_us_10_turns

    @property
    def over_floor(self) -> float:
        return self.p50_us_10_turns / self.floor_p50_us


@dataclass
class MemoryResult:
    """Resident memory of a process serving one system's workload, and nothing else."""

    flow: str
    threads: int
    requests: int
    baseline_mib: float  # after imports and connections, before the first request
    peak_mib: float  # the high-water mark while serving the workload
    after_mib: float  # when the workload is done (what its caches keep)


@dataclass
class PalResult:
    """Round trips (medians) of one continued pal-mcp-server request on one storage;
    None where pal had lost the thread."""

    system: str
    warm_store: float | None
    warm_redis: float | None
    new_process_store: float | None
    new_process_redis: float | None
    cold_store: float | None
    cold_redis: float | None
    # pal's own storage calls, counted where the key-value store serves it (else 0).
    pal_gets_warm: float | None = None
    pal_sets_warm: float | None = None
    pal_gets_new_process: float | None = None
    pal_sets_new_process: float | None = None


@dataclass
class PrefixResult:
    """Mean share of each request's prompt equal to a prefix of the previous one's."""

    budget_tokens: int
    exchange_chars: int  # a question and its answer
    exchanges: int
    before: float  # the history as one text message (build_history)
    after: float  # native messages (history_messages)
    compacted: float = 0.0  # native messages with compaction on


@dataclass
class PromptSizes:
    """Each request's prompt over one long conversation, in estimated tokens."""

    mode: str  # compaction off / on
    budget_tokens: int
    exchange_chars: int
    tokens: list[int]
    prefix_share: float  # mean share of a prompt's bytes equal to the previous one's prefix
    compactions: int


@dataclass
class CompactionOverheadResult:
    """The chat tool's request with compaction off and on, side by side (medians)."""

    latency_ms: float
    off_p50_ms: float
    on_p50_ms: float
    round_trips_off: float  # store round trips per request, on the wire
    round_trips_on: float
    requests: int
    compactions: int
    compaction_p50_ms: float  # one compaction, after the reply (not on the request's path)

    @property
    def overhead(self) -> float:
        return self.on_p50_ms / self.off_p50_ms - 1


@dataclass
class EncryptionResult:
    """A continued request with encryption off and on, side by side (medians)."""

    state: str  # warm (L1) or cold
    latency_ms: float
    off_p50_ms: float
    on_p50_ms: float
    round_trips_on: float

    @property
    def overhead(self) -> float:
        return self.on_p50_ms / self.off_p50_ms - 1


@dataclass
class AgentsSessionResult:
    """An Agents SDK session (the SDK's own or convmem's) under agent turns."""

    system: str
    items: int  # in the session before the measured turns
    latency_ms: float
    round_trips: float  # per agent turn, on the wire; -1 when not countable
    p50_ms: float  # one turn at a time
    p99_ms: float
    turns_per_second: float
    concurrency: int
    p50_ms_concurrent: float
    p99_ms_concurrent: float
    turns_per_second_concurrent: float


@dataclass
class Report:
    machine: str
    quick: bool
    flows: list[FlowResult] = field(default_factory=list)
    layers: list[LayerResult] = field(default_factory=list)
    append_by_length: dict[int, float] = field(default_factory=dict)  # turns -> p50 µs
    concurrency: list[ConcurrencyResult] = field(default_factory=list)
    stores: list[FlowResult] = field(default_factory=list)  # convmem per store and cache state
    memory: list[MemoryResult] = field(default_factory=list)
    store_appends: list[StoreAppendResult] = field(default_factory=list)  # no cache, per path
    pal: list[PalResult] = field(default_factory=list)  # pal-mcp-server per storage
    prefix: list[PrefixResult] = field(default_factory=list)  # prompt-prefix stability
    encryption: list[EncryptionResult] = field(default_factory=list)  # at rest, off vs on
    agents: list[AgentsSessionResult] = field(default_factory=list)  # Agents SDK sessions
    prompt_sizes: list[PromptSizes] = field(default_factory=list)  # compaction off / on
    compaction: list[CompactionOverheadResult] = field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Report:
        """A report read back from ``to_json`` (to re-render BENCHMARKS.md without a rerun)."""
        raw = orjson.loads(data)
        return cls(
            machine=raw["machine"],
            quick=raw["quick"],
            flows=[FlowResult(**f) for f in raw["flows"]],
            layers=[LayerResult(**layer) for layer in raw["layers"]],
            append_by_length={int(k): v for k, v in raw["append_by_length"].items()},
            concurrency=[ConcurrencyResult(**c) for c in raw.get("concurrency", [])],
            stores=[FlowResult(**f) for f in raw.get("stores", [])],
            memory=[MemoryResult(**m) for m in raw.get("memory", [])],
            store_appends=[StoreAppendResult(**a) for a in raw.get("store_appends", [])],
            pal=[PalResult(**p) for p in raw.get("pal", [])],
            prefix=[PrefixResult(**p) for p in raw.get("prefix", [])],
            encryption=[EncryptionResult(**e) for e in raw.get("encryption", [])],
            agents=[AgentsSessionResult(**a) for a in raw.get("agents", [])],
            prompt_sizes=[PromptSizes(**p) for p in raw.get("prompt_sizes", [])],
            compaction=[CompactionOverheadResult(**c) for c in raw.get("compaction", [])],
        )
