"""What the server needs of a model: one completion from a prompt and its history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from convmem.errors import ProviderError

__all__ = ["Completion", "Provider", "ProviderError"]


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
    ) -> Completion:
        """Answer ``prompt`` given the conversation so far (``history``, prompt-ready text)."""
        ...

    async def aclose(self) -> None: ...
