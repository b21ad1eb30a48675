"""Configuration, validated eagerly: from ``CONVMEM_*`` environment variables or from values.

``Settings.load()`` reads the environment (``Memory.from_env``, the command line);
``Settings.of(...)`` takes only the values it is given (``Memory.from_url``). The
variable names of the server convmem replaces are accepted as aliases where they
mean the same thing (``REDIS_URL``, ``L1_CACHE_TTL_SECS``, ``L2_CACHE_TTL_SECS``,
``CONVERSATION_TIMEOUT_HOURS``, ``MAX_CONVERSATION_TURNS``), and Supabase's own
(``SUPABASE_URL``, ``SUPABASE_SERVICE_ROLE_KEY``, ``SUPABASE_KEY``); the
``CONVMEM_*`` name wins when both are set.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from convmem.cache.tags import CacheTags
from convmem.compaction import CompactionPolicy
from convmem.errors import ConfigurationError, InvalidInputError
from convmem.limits import InputLimits, ThreadLimits
from convmem.options import DEFAULTS as MEMORY_DEFAULTS
from convmem.options import MemoryOptions

log = logging.getLogger("convmem.settings")

DEFAULT_STORE_URL = "sqlite:///./data/convmem.db"
# Without compaction the whole history is sent and dropped from the front as it grows
# past the budget: a conversation is kept short, as the server convmem replaces kept it.
MAX_TURNS_WITHOUT_COMPACTION = 50
# With compaction the prompt stays bounded however long the thread; what grows is the
# stored thread, which is loaded whole into the caches and by thread_get and exports
# (1,000 exchanges of ~1 KB each: ~2 MB), so the limit bounds that.
MAX_TURNS_WITH_COMPACTION = 2000


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(name, f"CONVMEM_{name.upper()}", *aliases)


class Settings(BaseSettings):
    """Every setting of convmem, with its environment variable(s) and default."""

    model_config = SettingsConfigDict(
        env_prefix="CONVMEM_", populate_by_name=True, extra="ignore", frozen=True
    )

    store_url: str = Field(DEFAULT_STORE_URL, validation_alias=_env("store_url"))
    cache_url: str | None = Field(None, validation_alias=_env("cache_url", "REDIS_URL"))
    supabase_url: str | None = Field(None, validation_alias=_env("supabase_url", "SUPABASE_URL"))
    supabase_service_key: SecretStr | None = Field(
        None,
        validation_alias=_env("supabase_service_key", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_KEY"),
    )
    l1_ttl_seconds: float = Field(
        300.0, gt=0, validation_alias=_env("l1_ttl_seconds", "L1_CACHE_TTL_SECS")
    )
    l1_max_items: int = Field(1000, gt=0, validation_alias=_env("l1_max_items"))
    l1_max_bytes: int = Field(64 * 1024 * 1024, gt=0, validation_alias=_env("l1_max_bytes"))
    cache_prefix: str = Field("convmem:", min_length=1, validation_alias=_env("cache_prefix"))
    cache_key: SecretStr | None = Field(None, validation_alias=_env("cache_key"))
    redis_socket_timeout: float = Field(0.25, gt=0, validation_alias=_env("redis_socket_timeout"))
    redis_breaker_reset_seconds: float = Field(
        MEMORY_DEFAULTS.redis_breaker_reset_seconds,
        gt=0,
        validation_alias=_env("redis_breaker_reset_seconds"),
    )
    single_instance: bool = Field(
        MEMORY_DEFAULTS.single_instance, validation_alias=_env("single_instance")
    )
    cache_lease_seconds: float = Field(
        MEMORY_DEFAULTS.lease_seconds, gt=0, validation_alias=_env("cache_lease_seconds")
    )
    consistency: Literal["default", "strict"] = Field(
        MEMORY_DEFAULTS.consistency, validation_alias=_env("consistency")
    )
    l2_ttl_seconds: float = Field(
        1800.0, gt=0, validation_alias=_env("l2_ttl_seconds", "L2_CACHE_TTL_SECS")
    )
    thread_ttl_hours: float = Field(
        3.0, gt=0, validation_alias=_env("thread_ttl_hours", "CONVERSATION_TIMEOUT_HOURS")
    )
    max_turns: int | None = Field(
        None, gt=0, validation_alias=_env("max_turns", "MAX_CONVERSATION_TURNS")
    )  # None: the mode's default, see turn_limit
    compaction: bool = Field(False, validation_alias=_env("compaction"))
    compaction_model: str | None = Field(None, validation_alias=_env("compaction_model"))
    compaction_trigger_share: float = Field(
        0.75, gt=0, le=1, validation_alias=_env("compaction_trigger_share")
    )
    compaction_keep_share: float = Field(
        0.3, gt=0, le=1, validation_alias=_env("compaction_keep_share")
    )
    compaction_summary_share: float = Field(
        0.15, gt=0, le=1, validation_alias=_env("compaction_summary_share")
    )
    max_content_bytes: int = Field(1_000_000, gt=0, validation_alias=_env("max_content_bytes"))
    max_metadata_bytes: int = Field(65_536, gt=0, validation_alias=_env("max_metadata_bytes"))
    host: str = Field("127.0.0.1", validation_alias=_env("host", "EXAI_WS_HOST"))
    port: int = Field(8079, ge=1, le=65535, validation_alias=_env("port", "EXAI_WS_PORT"))
    token: str | None = Field(None, validation_alias=_env("token"))
    client_tokens: str | None = Field(None, validation_alias=_env("client_tokens"))
    operators: str | None = Field(None, validation_alias=_env("operators"))
    history_tokens: int = Field(8000, gt=0, validation_alias=_env("history_tokens"))
    max_frame_bytes: int = Field(
        32 * 1024 * 1024, gt=0, validation_alias=_env("max_frame_bytes", "EXAI_WS_MAX_BYTES")
    )
    ws_hello_timeout_seconds: float = Field(
        15.0, gt=0, validation_alias=_env("ws_hello_timeout_seconds")
    )
    http_sessions: Literal["stateless", "stateful"] = Field(
        "stateless", validation_alias=_env("http_sessions")
    )
    http_sessions_per_client: int = Field(
        100, gt=0, validation_alias=_env("http_sessions_per_client")
    )
    http_session_idle_seconds: float = Field(
        300.0, gt=0, validation_alias=_env("http_session_idle_seconds")
    )
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias=_env("http_header_timeout_seconds")
    )
    ws_progress_seconds: float = Field(5.0, gt=0, validation_alias=_env("ws_progress_seconds"))
    ws_send_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias=_env("ws_send_timeout_seconds")
    )
    ws_call_timeout_seconds: float = Field(
        300.0, gt=0, validation_alias=_env("ws_call_timeout_seconds")
    )
    store_timeout_seconds: float = Field(
        MEMORY_DEFAULTS.store_timeout_seconds, gt=0, validation_alias=_env("store_timeout_seconds")
    )
    store_breaker_reset_seconds: float = Field(
        MEMORY_DEFAULTS.store_breaker_reset_seconds,
        gt=0,
        validation_alias=_env("store_breaker_reset_seconds"),
    )
    pg_connect_timeout_seconds: float = Field(
        3.0, ge=1, validation_alias=_env("pg_connect_timeout_seconds")
    )
    pg_pool_timeout_seconds: float = Field(
        2.0, gt=0, validation_alias=_env("pg_pool_timeout_seconds")
    )
    pg_pool_min_size: int = Field(1, ge=0, validation_alias=_env("pg_pool_min_size"))
    pg_pool_max_size: int = Field(10, gt=0, validation_alias=_env("pg_pool_max_size"))
    pg_prepared_statements: bool | None = Field(
        None, validation_alias=_env("pg_prepared_statements")
    )

    encryption_keys: SecretStr | None = Field(None, validation_alias=_env("encryption_keys"))
    encryption_accept_plaintext: bool = Field(
        False, validation_alias=_env("encryption_accept_plaintext")
    )
    encryption_accept_legacy: bool = Field(True, validation_alias=_env("encryption_accept_legacy"))

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _joined_keys(cls, value: object) -> object:
        """``encryption_keys=[...]`` in code, a comma-separated string in the environment."""
        if isinstance(value, list | tuple):
            return ",".join(str(key) for key in value)
        return value

    @field_validator("store_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        from convmem.stores import STORE_SCHEMES

        scheme = value.partition("://")[0].lower()
        if scheme not in STORE_SCHEMES:
            raise ValueError(
                f"unsupported store URL scheme {scheme!r}; use one of {sorted(STORE_SCHEMES)}"
            )
        return value

    @field_validator("cache_key")
    @classmethod
    def _cache_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                CacheTags.from_text(value.get_secret_value(), setting="the cache key")
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("cache_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and value.partition("://")[0].lower() not in {
            "redis",
            "rediss",
            "unix",
            "redis+cluster",
            "rediss+cluster",
        }:
            raise ValueError(
                "the cache URL must be redis://, rediss://, unix:// or, for a Redis Cluster, "
                "redis+cluster://host:port[,host:port…] (rediss+cluster:// with TLS)"
            )
        return value

    @model_validator(mode="after")
    def _consistent_compaction(self) -> Settings:
        try:
            self.compaction_policy  # noqa: B018 (built to be checked)
        except InvalidInputError as exc:
            raise ValueError(f"compaction shares: {exc}") from None
        return self

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment (plus ``overrides``); raise ``ConfigurationError`` when
        invalid, naming the variable that supplied the bad value. An unknown ``CONVMEM_*``
        variable is logged as a warning with the nearest known name."""
        for warning in unknown_variables(os.environ):
            log.warning("%s", warning)
        return _validated(cls, overrides, os.environ)

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """Only ``values`` and the defaults; reads no environment variable."""
        return _validated(_ValuesOnly, values, {})

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every environment variable a setting is read from, each ``CONVMEM_*`` name and
        the seed's and Supabase's aliases."""
        return tuple(
            name for field in cls.model_fields for name in _variables_of(field) if name.isupper()
        )

    @property
    def turn_limit(self) -> int:
        """``max_turns`` if set, else the default of the mode (compaction on or off)."""
        if self.max_turns is not None:
            return self.max_turns
        if self.compaction:
            return MAX_TURNS_WITH_COMPACTION
        return MAX_TURNS_WITHOUT_COMPACTION

    @property
    def compaction_policy(self) -> CompactionPolicy:
        return CompactionPolicy(
            trigger_share=self.compaction_trigger_share,
            keep_share=self.compaction_keep_share,
            summary_share=self.compaction_summary_share,
        )

    @property
    def thread_limits(self) -> ThreadLimits:
        return ThreadLimits(ttl=timedelta(hours=self.thread_ttl_hours), max_turns=self.turn_limit)

    @property
    def memory_options(self) -> MemoryOptions:
        return MemoryOptions(
            single_instance=self.single_instance,
            consistency=self.consistency,
            redis_breaker_reset_seconds=self.redis_breaker_reset_seconds,
            lease_seconds=self.cache_lease_seconds,
            store_timeout_seconds=self.store_timeout_seconds,
            store_breaker_reset_seconds=self.store_breaker_reset_seconds,
        )

    @property
    def input_limits(self) -> InputLimits:
        return InputLimits(
            max_content_bytes=self.max_content_bytes, max_metadata_bytes=self.max_metadata_bytes
        )


class _ValuesOnly(Settings):
    """Settings that read no environment: only the values passed in and the defaults."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


# Read elsewhere: the model provider's variables (convmem.providers.select), and the
# repository's own tools (tests, benchmarks, chaos runs), which are no settings.
_OTHER_VARIABLES = frozenset(
    {
        "CONVMEM_PROVIDER",
        "CONVMEM_MODEL",
        "CONVMEM_MODEL_API_KEY",
        "CONVMEM_MODEL_BASE_URL",
        "CONVMEM_MODEL_TIMEOUT_SECONDS",
        "CONVMEM_MODEL_MAX_RETRIES",
    }
)
_TOOL_PREFIXES = ("CONVMEM_TEST_", "CONVMEM_BENCH_", "CONVMEM_CHAOS")
# Never repeated in an error message.
_SECRET_FIELDS = frozenset({"token", "client_tokens", "encryption_keys", "supabase_service_key"})


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """A warning for each ``CONVMEM_*`` variable in ``env`` that nothing reads (a typo,
    most likely), with the nearest known name."""
    known = {*Settings.variables(), *_OTHER_VARIABLES}
    warnings = []
    for name in sorted(env):
        if not name.startswith("CONVMEM_") or name in known or name.startswith(_TOOL_PREFIXES):
            continue
        nearest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {nearest[0]}?" if nearest else " (see the README's Configuration)"
        warnings.append(f"{name} is not a convmem setting and is ignored{hint}")
    return warnings


def _variables_of(field: str) -> tuple[str, ...]:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (field,)


def _source_of(field: str, values: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """Where a field's value came from: the keyword it was given as, else the first
    variable set among its names (the CONVMEM_* one wins, as in reading)."""
    if field in values:
        return field
    names = _variables_of(field)
    return next((name for name in names if name.isupper() and name in env), field)


def _validated(cls: type[Settings], values: dict[str, Any], env: Mapping[str, str]) -> Settings:
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else ""
            if field in cls.model_fields:
                source = _source_of(field, values, env)
                shown = env.get(source, values.get(source, err.get("input")))
                value = "<hidden>" if field in _SECRET_FIELDS else repr(shown)
                problems.append(f"{source}={value}: {_plain_message(err['msg'])}")
            else:
                problems.append(_plain_message(err["msg"]))
        raise ConfigurationError(f"invalid convmem settings: {'; '.join(problems)}") from exc


def _plain_message(message: str) -> str:
    """Pydantic's message in the words of this one: ``Value error, x`` is just ``x``."""
    return message.removeprefix("Value error, ")
