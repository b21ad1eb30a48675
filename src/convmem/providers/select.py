"""Pick the provider by which API key is set; the offline echo when none is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from convmem.providers.base import Provider


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    key_variables: tuple[str, ...]
    base_url: str | None
    default_model: str


# First match wins. CONVMEM_MODEL_* configures any other OpenAI-compatible endpoint.
PRESETS = (
    Preset("custom", ("CONVMEM_MODEL_API_KEY",), None, "default"),
    Preset("glm", ("GLM_API_KEY", "ZAI_API_KEY"), "https://api.z.ai/api/paas/v4", "glm-4.6"),
    Preset(
        "kimi",
        ("KIMI_API_KEY", "MOONSHOT_API_KEY"),
        "https://api.moonshot.ai/v1",
        "kimi-k2-0905-preview",
    ),
    Preset("openai", ("OPENAI_API_KEY",), None, "gpt-4o-mini"),
)


def provider_from_env(env: Mapping[str, str] | None = None) -> Provider:
    """The provider the environment asks for (``CONVMEM_PROVIDER`` forces one by name)."""
    from convmem.errors import ConfigurationError
    from convmem.providers.echo import EchoProvider

    env = os.environ if env is None else env
    forced = env.get("CONVMEM_PROVIDER", "").strip().lower()
    if forced == "echo":
        return EchoProvider()
    for preset in PRESETS:
        if forced and preset.name != forced:
            continue
        key = next((env[v] for v in preset.key_variables if env.get(v)), None)
        if key is None:
            continue
        from convmem.providers.openai_compat import OpenAICompatibleProvider

        try:
            timeout = float(env.get("CONVMEM_MODEL_TIMEOUT_SECONDS", "120"))
            retries = int(env.get("CONVMEM_MODEL_MAX_RETRIES", "3"))
        except ValueError as exc:
            raise ConfigurationError(
                f"CONVMEM_MODEL_TIMEOUT_SECONDS / CONVMEM_MODEL_MAX_RETRIES must be numbers: {exc}"
            ) from exc
        return OpenAICompatibleProvider(
            name=preset.name,
            api_key=key,
            base_url=env.get("CONVMEM_MODEL_BASE_URL") or preset.base_url,
            default_model=env.get("CONVMEM_MODEL") or preset.default_model,
            timeout=timeout,
            max_retries=retries,
        )
    if forced:
        names = ", ".join(v for p in PRESETS if p.name == forced for v in p.key_variables)
        raise ConfigurationError(
            f"CONVMEM_PROVIDER={forced!r} but no key is set"
            + (
                f" (set {names})"
                if names
                else f"; known: echo, {', '.join(p.name for p in PRESETS)}"
            )
        )
    return EchoProvider()
