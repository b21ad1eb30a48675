"""What the server needs of a model: one completion from a prompt and its history,
optionally streamed piece by piece to whoever is listening."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from convmem.errors import ProviderError

__all__ = ["Completion", "Provider", "ProviderError", "TextSink"]

# Called with each new piece of the reply as the model produces it (not the text so far).
TextSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    provider: str
    model: str


class Provider(Protocol):
    name: str
    default_model: str

    async def complete(
        self,
        *,
        prompt: str,
        history: str,
        history_turns: int,
        system_prompt: str | None,
        model: str | None,
        on_text: TextSink | None = None,
    ) -> Completion:
        """Answer ``prompt`` given the conversation so far (``history``, prompt-ready text).

        With ``on_text``, the reply is streamed: each piece goes to ``on_text`` as it
        arrives, and the returned completion holds the whole text.
        """
        ...

    async def aclose(self) -> None: ...
