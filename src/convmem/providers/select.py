"""Pick the provider by which API key is set; the offline echo when none is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import SecretStr

    from convmem.providers.base import Provider
    from convmem.settings import ProviderSettings


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    key_setting: str  # the ProviderSettings field holding its API key
    base_url: str | None
    default_model: str


# First match wins. CONVMEM_MODEL_* configures any other OpenAI-compatible endpoint.
PRESETS = (
    Preset("custom", "api_key", None, "default"),
    Preset("glm", "glm_api_key", "https://api.z.ai/api/paas/v4", "glm-4.6"),
    Preset("kimi", "kimi_api_key", "https://api.moonshot.ai/v1", "kimi-k2-0905-preview"),
    Preset("openai", "openai_api_key", None, "gpt-4o-mini"),
)


def provider_for(settings: ProviderSettings) -> Provider:
    """The provider ``settings`` ask for (``CONVMEM_PROVIDER`` forces one by name)."""
    from convmem.errors import ConfigurationError
    from convmem.providers.echo import EchoProvider

    forced = settings.name
    if forced == "echo":
        return EchoProvider()
    for preset in PRESETS:
        if forced and preset.name != forced:
            continue
        key: SecretStr | None = getattr(settings, preset.key_setting)
        if not key or not key.get_secret_value():
            continue
        from convmem.providers.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider(
            name=preset.name,
            api_key=key.get_secret_value(),
            base_url=settings.base_url or preset.base_url,
            default_model=settings.model or preset.default_model,
            timeout=settings.timeout_seconds,
            max_retries=settings.max_retries,
        )
    if forced:
        preset_key = next(p.key_setting for p in PRESETS if p.name == forced)
        names = ", ".join(type(settings).variables_of(preset_key))
        raise ConfigurationError(f"CONVMEM_PROVIDER={forced!r} but no key is set (set {names})")
    return EchoProvider()
