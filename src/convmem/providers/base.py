"""What the server needs of a model: one completion from a prompt and its history,
optionally streamed piece by piece to whoever is listening."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from convmem.errors import ProviderError

if TYPE_CHECKING:
    from convmem.messages import ChatMessage

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
        history: Sequence[ChatMessage],
        history_turns: int,
        system_prompt: str | None,
        model: str | None,
        on_text: TextSink | None = None,
    ) -> Completion:
        """Answer ``prompt`` given the conversation so far (``history``: native chat
        messages, oldest first; ``history_turns`` counts every earlier turn, shown or not).

        With ``on_text``, the reply is streamed: each piece goes to ``on_text`` as it
        arrives, and the returned completion holds the whole text.
        """
        ...

    async def aclose(self) -> None: ...
