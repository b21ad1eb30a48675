"""Prompt-prefix stability: over a 200-exchange conversation, the share of each
request's prompt (bytes of the chat-completions ``messages`` JSON) that equals a
prefix of the previous request's prompt — what providers' prompt caching can reuse.

Before: the history as one user message rendered by ``build_history`` (a header with
``Turn n/50`` first, then turns dropped one by one). After: ``history_messages``.
Pure computation, no services; the conversation's sizes are stated with the figure.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from convmem.history import build_history
from convmem.messages import ChatMessage, history_messages
from convmem.models import Thread, Turn
from convmem_bench.results import PrefixResult

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SYSTEM: ChatMessage = {"role": "system", "content": "You are a careful engineering assistant."}


def _thread(turns: list[Turn], thread_id: str) -> Thread:
    numbered = tuple(replace(t, seq=n) for n, t in enumerate(turns, 1))
    return Thread(thread_id, numbered, "chat", None, None, {}, NOW, NOW, NOW)


def common_prefix(a: bytes, b: bytes) -> int:
    """How many leading bytes ``a`` and ``b`` share."""
    size = min(len(a), len(b))
    return next((i for i in range(size) if a[i] != b[i]), size)


def _shares(budget: int, question: int, answer: int, exchanges: int, *, native: bool) -> float:
    thread_id = str(uuid.UUID(int=7))
    turns: list[Turn] = []
    previous: bytes | None = None
    shares = []
    for n in range(exchanges):
        prompt = f"question {n}: " + "q" * question
        thread = _thread(turns, thread_id)
        if native:
            history = history_messages(thread, max_tokens=budget)
        elif turns:
            text = build_history(thread, max_tokens=budget, max_turns=50)
            history = [{"role": "user", "content": text}]
        else:
            history = []
        body = json.dumps([SYSTEM, *history, {"role": "user", "content": prompt}]).encode()
        if previous is not None:
            shares.append(common_prefix(previous, body) / len(body))
        previous = body
        turns += [
            Turn(role="user", content=prompt),
            Turn(role="assistant", content=f"answer {n}: " + "a" * answer),
        ]
    return sum(shares) / len(shares)


def measure_prefix(exchanges: int = 200) -> list[PrefixResult]:
    results = []
    for budget in (8_000, 32_000):
        for question, answer in ((400, 1_200), (400, 2_400)):
            results.append(
                PrefixResult(
                    budget_tokens=budget,
                    exchange_chars=question + answer,
                    exchanges=exchanges,
                    before=_shares(budget, question, answer, exchanges, native=False),
                    after=_shares(budget, question, answer, exchanges, native=True),
                )
            )
    return results
