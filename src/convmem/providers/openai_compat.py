"""OpenAI-compatible chat completions through the official ``openai`` SDK.

The SDK brings timeouts, retries with exponential backoff and streaming (server-sent
events); one client (one connection pool) lives as long as the provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import openai

from convmem.providers.base import Completion, ProviderError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from openai.types.chat import ChatCompletionMessageParam

    from convmem.messages import ChatMessage
    from convmem.providers.base import TextSink


class OpenAICompatibleProvider:
    def __init__(
        self,
        *,
        name: str,
        api_key: str,
        base_url: str | None,
        default_model: str,
        timeout: float = 120.0,
        max_retries: int = 3,
    ) -> None:
        self.name = name
        self.default_model = default_model
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

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
        messages: list[ChatCompletionMessageParam] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        # The conversation as it happened, each turn in its own role (see messages.py).
        messages.extend(cast("list[ChatCompletionMessageParam]", list(history)))
        messages.append({"role": "user", "content": prompt})
        chosen = model or self.default_model
        try:
            if on_text is not None:
                return await self._stream(chosen, messages, on_text)
            response = await self._client.chat.completions.create(model=chosen, messages=messages)
        except openai.APIError as exc:
            raise ProviderError(f"{self.name} ({chosen}) failed: {exc}") from exc
        if not response.choices:
            raise ProviderError(f"{self.name} ({chosen}) returned no choices")
        text = response.choices[0].message.content or ""
        return Completion(text=text, provider=self.name, model=response.model or chosen)

    async def _stream(
        self, chosen: str, messages: list[ChatCompletionMessageParam], on_text: TextSink
    ) -> Completion:
        pieces: list[str] = []
        answered_by = chosen
        # Leaving the block closes the response, so a cancelled call stops the model's work.
        async with await self._client.chat.completions.create(
            model=chosen, messages=messages, stream=True
        ) as stream:
            async for chunk in stream:
                answered_by = chunk.model or answered_by
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    pieces.append(piece)
                    await on_text(piece)
        return Completion(text="".join(pieces), provider=self.name, model=answered_by)

    async def aclose(self) -> None:
        await self._client.close()
