"""Compaction: a conversation's old turns folded into a summary, so it never runs out.

When the part of a thread's history that no summary covers passes ``trigger_share`` of
the history budget, everything but the newest turns (about ``keep_share`` of the
budget, whole tool call/result blocks) is summarised together with the previous
summary, and the new summary is saved with the thread (``Memory.compact``): from then
on it stands for those turns in the history models are sent (``convmem.messages``),
while every turn stays in the store, in exports and in ``thread_get``.

It runs off the request's critical path: ``Compactor.schedule`` starts it after the
reply was saved and returns at once. At most one compaction of a thread runs at a time:
one task per thread in an instance, and across instances a claim in Redis that expires
(``CLAIM_SECONDS``); and the store refuses a summary made from a version that another
summary or a pop already moved past, so one summary wins even without Redis. A failure
changes nothing; the next request over the threshold tries again.

Summaries come from the thread's model (``ModelSummariser``: the provider the server
uses, or a cheaper model it names) or, offline, from ``ExtractiveSummariser``: the
first sentence of each message, deterministic, no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from convmem.compaction_policy import CompactionPolicy
from convmem.history import CHARS_PER_TOKEN, estimate_tokens
from convmem.messages import (
    SUMMARY_HEADING,
    message_cost,
    summary_message,
    turn_blocks,
    turn_message,
)
from convmem.providers.base import Completion
from convmem.summaries import unsummarised

if TYPE_CHECKING:
    from collections.abc import Sequence

    from convmem.messages import ChatMessage
    from convmem.models import Thread
    from convmem.providers.base import Provider


SUMMARY_SYSTEM_PROMPT = (
    "You compress conversations. Summarise the conversation you are given so that it can"
    " be continued from the summary alone: keep every decision, fact, name, number, file"
    " path, open question and instruction the user gave; drop pleasantries and repetition."
    " If it begins with an earlier summary, fold that in. Write plain sentences, no"
    " preamble."
)
SUMMARY_REQUEST = "Summarise the conversation above in at most {words} words."
TRUNCATED = " […]"
# How long one instance holds a thread's compaction (the model's call included) before
# another may start one: a stopped holder blocks the thread no longer than this.
CLAIM_SECONDS = 180.0


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """What to summarise: ``messages`` (the previous summary, then the folded turns' own
    messages) into at most ``summary_tokens``; the summary covers the thread's turns up to
    ``covers_to_seq`` and is made from ``base_version``."""

    thread_id: str
    base_version: int
    covers_to_seq: int
    messages: list[ChatMessage]
    folded_turns: int
    summary_tokens: int


def plan_compaction(
    thread: Thread,
    ancestors: Sequence[Thread] = (),
    *,
    max_tokens: int,
    policy: CompactionPolicy | None = None,
) -> CompactionPlan | None:
    """The compaction ``thread`` needs now, or None (under the threshold, or nothing of
    its own to fold: a summary covers a thread's own turns, never only its parent's)."""
    policy = policy or CompactionPolicy()
    view = unsummarised(thread, ancestors)
    blocks = turn_blocks(view.turns)
    costs = [sum(message_cost(turn_message(t)) for t in block) for block in blocks]
    if sum(costs) <= policy.trigger_share * max_tokens:
        return None
    kept, kept_cost = len(blocks), 0
    while kept > 1 and kept_cost + costs[kept - 1] <= policy.keep_share * max_tokens:
        kept -= 1
        kept_cost += costs[kept]
    if kept == len(blocks):
        kept -= 1  # one block alone passes the budget share: fold all before it
    folded = [turn for block in blocks[:kept] for turn in block]
    own_folded = len(folded) - (len(view.turns) - view.own)
    if own_folded <= 0:
        return None
    messages = [] if view.summary is None else [summary_message(view.summary)]
    messages += [turn_message(turn) for turn in folded]
    return CompactionPlan(
        thread_id=thread.id,
        base_version=thread.version,
        covers_to_seq=folded[-1].seq,
        messages=messages,
        folded_turns=len(folded),
        summary_tokens=max(1, int(policy.summary_share * max_tokens)),
    )


class Summariser(Protocol):
    async def summarise(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        """A summary of ``messages`` within about ``max_tokens``, and who made it."""
        ...


class ModelSummariser:
    """Summaries written by a model: ``provider`` (the server's), with ``model`` (a
    cheaper one, say) or the provider's default."""

    def __init__(self, provider: Provider, model: str | None = None) -> None:
        self.provider = provider
        self.model = model

    async def summarise(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        words = max(1, max_tokens * CHARS_PER_TOKEN // 6)  # ~6 characters a word
        completion = await self.provider.complete(
            prompt=SUMMARY_REQUEST.format(words=words),
            history=messages,
            history_turns=len(messages),
            system_prompt=SUMMARY_SYSTEM_PROMPT,
            model=self.model,
        )
        return Completion(
            clipped(completion.text.strip(), max_tokens), completion.provider, completion.model
        )


class ExtractiveSummariser:
    """Offline summaries: each message's first sentence under its role, after the previous
    summary's points; the oldest points go first when it does not fit. Deterministic."""

    provider = "convmem"
    model = "extractive"
    sentence_chars = 240

    async def summarise(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        points: list[str] = []
        for message in messages:
            text = message["content"]
            if message["role"] == "system" and text.startswith(SUMMARY_HEADING):
                points += text.removeprefix(SUMMARY_HEADING).strip().splitlines()
            elif text.strip():
                points.append(f"- {message['role']}: {self._first_sentence(text)}")
        budget = max_tokens * CHARS_PER_TOKEN
        size = sum(len(point) for point in points) + len(points) - 1  # as joined by lines
        first = 0
        while len(points) - first > 1 and size > budget:  # the oldest points go first
            size -= len(points[first]) + 1
            first += 1
        text = "\n".join(points[first:])
        return Completion(clipped(text, max_tokens), self.provider, self.model)

    def _first_sentence(self, text: str) -> str:
        flat = " ".join(text.split())
        match = re.match(r"(.+?[.!?])(\s|$)", flat)
        sentence = match.group(1) if match else flat
        if len(sentence) > self.sentence_chars:
            return sentence[: self.sentence_chars] + TRUNCATED
        return sentence


def clipped(text: str, max_tokens: int) -> str:
    """``text`` cut to about ``max_tokens`` (a model may write more than it was asked)."""
    if estimate_tokens(text) <= max_tokens:
        return text
    return text[: max(0, max_tokens * CHARS_PER_TOKEN - len(TRUNCATED))] + TRUNCATED


def summariser_for(provider: Provider, model: str | None = None) -> Summariser:
    """The thread's own model summarises (or ``model`` of its provider); offline, the
    echo provider has nothing to summarise with, so the summary is extractive."""
    if provider.name == "echo":
        return ExtractiveSummariser()
    return ModelSummariser(provider, model)
