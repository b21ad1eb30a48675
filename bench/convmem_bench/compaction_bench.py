"""Compaction: what the model is sent over a long conversation, and what a request costs,
with ``CONVMEM_COMPACTION`` off and on.

- Prompt sizes and prefix stability: a conversation of fixed-size exchanges through a
  real ``Memory`` (SQLite in a temporary folder) and ``Memory.compact`` with the offline
  extractive summariser (deterministic; a model's summary would differ in words, not in
  size, which the policy bounds). Each request's prompt is the ``messages`` JSON the
  model would receive; its tokens are estimated as everywhere in convmem.
- Overhead: the ``chat`` tool's request (``ConversationService.chat``, the offline echo
  provider) on PostgreSQL with Redis, compaction off and on side by side, requests
  interleaved one by one. Compactions run after the reply, as in the server; they are
  waited for between requests (untimed), and their own time is reported apart.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from convmem import Memory
from convmem.compaction import ExtractiveSummariser
from convmem.compaction_policy import CompactionPolicy
from convmem.compactor import Compactor
from convmem.messages import history_messages, message_cost
from convmem.models import Turn
from convmem.providers.echo import EchoProvider
from convmem.server.service import ConversationService
from convmem_bench.prefix import SYSTEM, common_prefix
from convmem_bench.results import CompactionOverheadResult, PrefixResult, PromptSizes
from convmem_bench.systems import open_memory, round_trip_counter

if TYPE_CHECKING:
    from convmem.messages import ChatMessage
    from convmem_bench.measure import Plan
    from convmem_bench.rig import Rig

POLICY: Final = CompactionPolicy()
PLOTTED_BUDGET: Final = 8_000
PLOTTED_EXCHANGE: Final = (400, 1_200)  # question and answer characters


async def _conversation(
    budget: int, question: int, answer: int, exchanges: int, *, compact: bool
) -> tuple[list[int], float, int]:
    """Each request's prompt tokens, the mean share of a request's prompt bytes equal to
    a prefix of the previous one's, and how many compactions were saved."""
    summariser = ExtractiveSummariser()
    tokens: list[int] = []
    shares: list[float] = []
    previous: bytes | None = None
    with tempfile.TemporaryDirectory(prefix="convmem-compaction-bench-") as folder:
        url = f"sqlite:///{folder}/c.db"
        async with Memory.from_url(url, max_turns=2 * exchanges, single_instance=True) as memory:
            thread = await memory.create_thread(tool_name="chat")
            for n in range(exchanges):
                question_text = f"question {n}: " + "q" * question
                prompt: ChatMessage = {"role": "user", "content": question_text}
                request = [SYSTEM, *history_messages(thread, max_tokens=budget), prompt]
                body = json.dumps(request).encode()
                tokens.append(sum(message_cost(m) for m in request))
                if previous is not None:
                    shares.append(common_prefix(previous, body) / len(body))
                previous = body
                thread = await memory.add_turns(
                    thread.id,
                    [
                        Turn(role="user", content=question_text),
                        Turn(role="assistant", content=f"answer {n}: " + "a" * answer),
                    ],
                )
                if compact:
                    compacted = await memory.compact(
                        thread.id, summariser=summariser, max_tokens=budget, policy=POLICY
                    )
                    thread = compacted or thread
            return tokens, sum(shares) / len(shares), memory.stats.compactions


async def measure_prompts(
    prefix: list[PrefixResult], exchanges: int, plotted_exchanges: int
) -> list[PromptSizes]:
    """Fill in each prefix result's share with compaction on; return the prompt sizes
    over ``plotted_exchanges`` at the default budget, off and on."""
    for result in prefix:
        question = 400
        answer = result.exchange_chars - question
        _, result.compacted, _ = await _conversation(
            result.budget_tokens, question, answer, exchanges, compact=True
        )
    sizes = []
    question, answer = PLOTTED_EXCHANGE
    for compact in (False, True):
        tokens, share, compactions = await _conversation(
            PLOTTED_BUDGET, question, answer, plotted_exchanges, compact=compact
        )
        sizes.append(
            PromptSizes(
                mode="compaction on" if compact else "compaction off",
                budget_tokens=PLOTTED_BUDGET,
                exchange_chars=question + answer,
                tokens=tokens,
                prefix_share=share,
                compactions=compactions,
            )
        )
    return sizes


async def measure_compaction_overhead(
    rig: Rig, redis_url: str, prefix: str, plan: Plan, log: Callable[[str], None]
) -> list[CompactionOverheadResult]:
    """The chat tool's request with compaction off and on, side by side."""
    endpoint = rig.endpoints["postgres"]
    budget = 2_000  # small, so that compactions come every few requests
    results = []
    async with contextlib.AsyncExitStack() as stack:
        memories = {
            mode: await open_memory(stack, endpoint, redis_url, f"{prefix}compaction-{mode}:")
            for mode in ("off", "on")
        }
        services = {
            mode: ConversationService(
                memory,
                EchoProvider(),
                history_tokens=budget,
                compactor=(
                    Compactor(memory, ExtractiveSummariser(), max_tokens=budget, policy=POLICY)
                    if mode == "on"
                    else None
                ),
            )
            for mode, memory in memories.items()
        }
        for latency in plan.compaction_latencies_ms:
            rig.set_latency(latency)
            times: dict[str, list[float]] = {"off": [], "on": []}
            trips: dict[str, list[int]] = {"off": [], "on": []}
            compaction_times: list[float] = []
            threads: dict[str, str | None] = {"off": None, "on": None}
            saved_before = memories["on"].stats.compactions
            for n in range(plan.compaction_requests):
                for mode in ("off", "on") if n % 2 == 0 else ("on", "off"):
                    service, memory = services[mode], memories[mode]
                    counter = round_trip_counter(endpoint, memory.store)
                    before = counter()
                    start = time.perf_counter()
                    reply = await service.chat(None, f"request {n}: " + "w " * 300, threads[mode])
                    times[mode].append((time.perf_counter() - start) * 1000)
                    trips[mode].append(counter() - before)
                    threads[mode] = reply.continuation_id
                    if service.compactor is not None and service.compactor.running:
                        start = time.perf_counter()
                        await service.compactor.drain()
                        compaction_times.append((time.perf_counter() - start) * 1000)
            result = CompactionOverheadResult(
                latency_ms=latency,
                off_p50_ms=statistics.median(times["off"][plan.threads :]),
                on_p50_ms=statistics.median(times["on"][plan.threads :]),
                round_trips_off=statistics.mean(trips["off"][1:]),
                round_trips_on=statistics.mean(trips["on"][1:]),
                requests=plan.compaction_requests,
                compactions=memories["on"].stats.compactions - saved_before,
                compaction_p50_ms=statistics.median(compaction_times) if compaction_times else 0,
            )
            results.append(result)
            log(
                f"{latency:>5.0f} ms  chat, compaction off {result.off_p50_ms:7.2f} ms"
                f"  on {result.on_p50_ms:7.2f} ms  ({result.overhead:+.1%}),"
                f" {result.compactions} compactions of {result.compaction_p50_ms:.1f} ms"
            )
        for service in services.values():
            await service.aclose()
        rig.set_latency(0.0)
    return results
