"""The offline echo provider: deterministic, no network, and clearly labelled as such.

It states how many earlier turns it was given, so continuation is visible without a model.
"""

from __future__ import annotations

from convmem.providers.base import Completion


class EchoProvider:
    name = "echo"
    default_model = "echo"

    async def complete(
        self,
        *,
        prompt: str,
        history: str,
        history_turns: int,
        system_prompt: str | None,
        model: str | None,
    ) -> Completion:
        text = (
            f"[offline echo provider: no model was called] I was given {history_turns} earlier "
            f"turn{'s' if history_turns != 1 else ''} of this conversation. You said: {prompt}"
        )
        return Completion(text=text, provider=self.name, model=model or self.default_model)

    async def aclose(self) -> None:
        pass
