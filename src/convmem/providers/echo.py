"""The offline echo provider: deterministic, no network, and clearly labelled as such.

It states how many earlier turns it was given, so continuation is visible without a
model, and it streams its reply in a few pieces, so streaming is testable offline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convmem.providers.base import Completion

if TYPE_CHECKING:
    from collections.abc import Sequence

    from convmem.messages import ChatMessage
    from convmem.providers.base import TextSink

STREAMED_PIECES = 4


class EchoProvider:
    name = "echo"
    default_model = "echo"

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
        text = (
            f"[offline echo provider: no model was called] I was given {history_turns} earlier "
            f"turn{'s' if history_turns != 1 else ''} of this conversation. You said: {prompt}"
        )
        if on_text is not None:
            size = -(-len(text) // STREAMED_PIECES)  # ceiling division: at most 4 pieces
            for start in range(0, len(text), size):
                await on_text(text[start : start + size])
        return Completion(text=text, provider=self.name, model=model or self.default_model)

    async def aclose(self) -> None:
        pass
