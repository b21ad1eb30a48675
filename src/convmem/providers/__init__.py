"""Model providers: an OpenAI-compatible client (GLM, Kimi, OpenAI presets) and an offline echo."""

from convmem.providers.base import Completion, Provider, ProviderError
from convmem.providers.select import provider_for

__all__ = ["Completion", "Provider", "ProviderError", "provider_for"]
