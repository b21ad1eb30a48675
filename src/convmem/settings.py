"""Configuration: one tree, grouped by part, read in one place and validated eagerly.

``Settings`` holds a group per part: ``store``, ``cache``, ``threads``, ``server``,
``daemon``, ``encryption``, ``compaction`` and ``provider`` (``settings.cache.l1_ttl_seconds``).
Each setting has one flat name, unique across groups, that is both its keyword
(``Settings.of(l1_ttl_seconds=60)``, ``Memory.from_url(url, max_turns=200)``) and, as
``CONVMEM_<NAME>``, its environment variable. ``Settings.load()`` reads the environment
(``Memory.from_env``, the command line, the server's model provider); ``Settings.of(...)``
takes only the values it is given (``Memory.from_url``). The variable names of the server
convmem replaces are accepted as aliases where they mean the same thing (``REDIS_URL``,
``L1_CACHE_TTL_SECS``, ``L2_CACHE_TTL_SECS``, ``CONVERSATION_TIMEOUT_HOURS``,
``MAX_CONVERSATION_TURNS``, ``EXAI_WS_HOST``/``_PORT``/``_MAX_BYTES``), and Supabase's and
the model providers' own (``SUPABASE_URL``, ``SUPABASE_SERVICE_ROLE_KEY``, ``OPENAI_API_KEY``…);
the ``CONVMEM_*`` name wins when both are set. Defaults come from the parts that use
them (``MemoryOptions``, ``ThreadLimits``, ``InputLimits``, ``CompactionPolicy``), each
written once.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic import model_validator as _model_validator

from convmem.cache.tags import CacheTags
from convmem.compaction_policy import CompactionPolicy
from convmem.errors import ConfigurationError, InvalidInputError
from convmem.limits import HISTORY_TOKENS, REDIS_MAX_CONNECTIONS, InputLimits, ThreadLimits
from convmem.options import MemoryOptions

log = logging.getLogger("convmem.settings")

DEFAULT_STORE_URL = "sqlite:///./data/convmem.db"
# Without compaction the whole history is sent and dropped from the front as it grows
# past the budget: a conversation is kept short, as the server convmem replaces kept it.
MAX_TURNS_WITHOUT_COMPACTION = ThreadLimits().max_turns
# With compaction the prompt stays bounded however long the thread; what grows is the
# stored thread, which is loaded whole into the caches and by thread_get and exports
# (1,000 exchanges of ~1 KB each: ~2 MB), so the limit bounds that.
MAX_TURNS_WITH_COMPACTION = 2000
PROVIDERS = ("echo", "custom", "glm", "kimi", "openai")

_MEMORY = MemoryOptions()
_THREADS = ThreadLimits()
_INPUT = InputLimits()
_COMPACTION = CompactionPolicy()


def _setting(name: str, default: Any, *aliases: str, **constraints: Any) -> Any:
    """A setting whose keyword is ``name``, read from ``CONVMEM_<NAME>`` then ``aliases``."""
    return Field(
        default,
        validation_alias=name,
        json_schema_extra={"variables": [f"CONVMEM_{name.upper()}", *aliases]},
        **constraints,
    )


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    @classmethod
    def variables_of(cls, field: str) -> tuple[str, ...]:
        """The environment variables ``field`` is read from, the ``CONVMEM_*`` one first."""
        extra = cls.model_fields[field].json_schema_extra
        variables = extra.get("variables") if isinstance(extra, dict) else None
        if not isinstance(variables, list):
            raise TypeError(f"setting {field!r} was made without _setting")
        return tuple(str(v) for v in variables)


class StoreSettings(_Group):
    """The source of truth: which store, and how its calls are bounded."""

    url: str = _setting("store_url", DEFAULT_STORE_URL)
    supabase_url: str | None = _setting("supabase_url", None, "SUPABASE_URL")
    supabase_service_key: SecretStr | None = _setting(
        "supabase_service_key", None, "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_KEY"
    )
    timeout_seconds: float = _setting("store_timeout_seconds", _MEMORY.store_timeout_seconds, gt=0)
    breaker_reset_seconds: float = _setting(
        "store_breaker_reset_seconds", _MEMORY.store_breaker_reset_seconds, gt=0
    )
    pg_connect_timeout_seconds: float = _setting("pg_connect_timeout_seconds", 3.0, ge=1)
    pg_pool_timeout_seconds: float = _setting("pg_pool_timeout_seconds", 2.0, gt=0)
    pg_pool_min_size: int = _setting("pg_pool_min_size", 1, ge=0)
    pg_pool_max_size: int = _setting("pg_pool_max_size", 10, gt=0)
    pg_prepared_statements: bool | None = _setting("pg_prepared_statements", None)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        from convmem.stores import STORE_SCHEMES

        scheme = value.partition("://")[0].lower()
        if scheme not in STORE_SCHEMES:
            raise ValueError(
                f"unsupported store URL scheme {scheme!r}; use one of {sorted(STORE_SCHEMES)}"
            )
        return value


class CacheSettings(_Group):
    """L1 in process, L2 in Redis, and how they stay coherent."""

    url: str | None = _setting("cache_url", None, "REDIS_URL")
    prefix: str = _setting("cache_prefix", "convmem:", min_length=1)
    key: SecretStr | None = _setting("cache_key", None)
    l1_ttl_seconds: float = _setting("l1_ttl_seconds", 300.0, "L1_CACHE_TTL_SECS", gt=0)
    l1_max_items: int = _setting("l1_max_items", 1000, gt=0)
    l1_max_bytes: int = _setting("l1_max_bytes", 64 * 1024 * 1024, gt=0)
    l2_ttl_seconds: float = _setting("l2_ttl_seconds", 1800.0, "L2_CACHE_TTL_SECS", gt=0)
    redis_socket_timeout: float = _setting("redis_socket_timeout", 0.25, gt=0)
    redis_max_connections: int = _setting(
        "redis_max_connections", REDIS_MAX_CONNECTIONS, gt=0, le=10_000
    )
    redis_breaker_reset_seconds: float = _setting(
        "redis_breaker_reset_seconds", _MEMORY.redis_breaker_reset_seconds, gt=0
    )
    single_instance: bool = _setting("single_instance", _MEMORY.single_instance)
    watch_unannounced: bool = _setting("watch_unannounced", _MEMORY.watch_unannounced)
    lease_seconds: float = _setting("cache_lease_seconds", _MEMORY.lease_seconds, gt=0)
    consistency: Literal["default", "strict"] = _setting("consistency", _MEMORY.consistency)

    @field_validator("key")
    @classmethod
    def _cache_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                CacheTags.from_text(value.get_secret_value(), setting="the cache key")
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("url")
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


class ThreadSettings(_Group):
    """What a thread may hold and how long it lives."""

    ttl_hours: float = _setting(
        "thread_ttl_hours",
        _THREADS.ttl / timedelta(hours=1),
        "CONVERSATION_TIMEOUT_HOURS",
        gt=0,
    )
    # None: the mode's default (Settings.turn_limit)
    max_turns: int | None = _setting("max_turns", None, "MAX_CONVERSATION_TURNS", gt=0)
    max_content_bytes: int = _setting("max_content_bytes", _INPUT.max_content_bytes, gt=0)
    max_metadata_bytes: int = _setting("max_metadata_bytes", _INPUT.max_metadata_bytes, gt=0)


class ServerSettings(_Group):
    """``convmem serve``: where it listens, who may call, the model's prompt budget, and
    the Streamable HTTP sessions."""

    host: str = _setting("host", "127.0.0.1", "EXAI_WS_HOST")
    port: int = _setting("port", 8079, "EXAI_WS_PORT", ge=1, le=65535)
    token: str | None = _setting("token", None)
    client_tokens: str | None = _setting("client_tokens", None)
    operators: str | None = _setting("operators", None)
    history_tokens: int = _setting("history_tokens", HISTORY_TOKENS, gt=0)
    http_sessions: Literal["stateless", "stateful"] = _setting("http_sessions", "stateless")
    http_sessions_per_client: int = _setting("http_sessions_per_client", 100, gt=0)
    http_session_idle_seconds: float = _setting("http_session_idle_seconds", 300.0, gt=0)
    http_header_timeout_seconds: float = _setting("http_header_timeout_seconds", 10.0, gt=0)


class DaemonSettings(_Group):
    """The WebSocket daemon the original daemon's clients talk to (on the server's port)."""

    max_frame_bytes: int = _setting("max_frame_bytes", 32 * 1024 * 1024, "EXAI_WS_MAX_BYTES", gt=0)
    hello_timeout_seconds: float = _setting("ws_hello_timeout_seconds", 15.0, gt=0)
    progress_seconds: float = _setting("ws_progress_seconds", 5.0, gt=0)
    send_timeout_seconds: float = _setting("ws_send_timeout_seconds", 30.0, gt=0)
    call_timeout_seconds: float = _setting("ws_call_timeout_seconds", 300.0, gt=0)


class EncryptionSettings(_Group):
    """Encryption at rest: the keys (the first seals) and what else is accepted."""

    keys: SecretStr | None = _setting("encryption_keys", None)
    accept_plaintext: bool = _setting("encryption_accept_plaintext", False)
    accept_legacy: bool = _setting("encryption_accept_legacy", True)

    @field_validator("keys", mode="before")
    @classmethod
    def _joined_keys(cls, value: object) -> object:
        """``encryption_keys=[...]`` in code, a comma-separated string in the environment."""
        if isinstance(value, list | tuple):
            return ",".join(str(key) for key in value)
        return value


class CompactionSettings(_Group):
    """Summaries that keep a long conversation's prompt inside its budget."""

    enabled: bool = _setting("compaction", False)
    model: str | None = _setting("compaction_model", None)
    trigger_share: float = _setting(
        "compaction_trigger_share", _COMPACTION.trigger_share, gt=0, le=1
    )
    keep_share: float = _setting("compaction_keep_share", _COMPACTION.keep_share, gt=0, le=1)
    summary_share: float = _setting(
        "compaction_summary_share", _COMPACTION.summary_share, gt=0, le=1
    )

    @_model_validator(mode="after")
    def _consistent(self) -> CompactionSettings:
        try:
            self.policy  # noqa: B018 (built to be checked)
        except InvalidInputError as exc:
            raise ValueError(f"compaction shares: {exc}") from None
        return self

    @property
    def policy(self) -> CompactionPolicy:
        return CompactionPolicy(
            trigger_share=self.trigger_share,
            keep_share=self.keep_share,
            summary_share=self.summary_share,
        )


class ProviderSettings(_Group):
    """The server's model: forced by name, or picked by which API key is set
    (``convmem.providers.select``); the offline echo when none is."""

    name: str | None = _setting("provider", None)
    model: str | None = _setting("model", None)
    api_key: SecretStr | None = _setting("model_api_key", None)
    base_url: str | None = _setting("model_base_url", None)
    timeout_seconds: float = _setting("model_timeout_seconds", 120.0, gt=0)
    max_retries: int = _setting("model_max_retries", 3, ge=0)
    glm_api_key: SecretStr | None = _setting("glm_api_key", None, "GLM_API_KEY", "ZAI_API_KEY")
    kimi_api_key: SecretStr | None = _setting(
        "kimi_api_key", None, "KIMI_API_KEY", "MOONSHOT_API_KEY"
    )
    openai_api_key: SecretStr | None = _setting("openai_api_key", None, "OPENAI_API_KEY")

    @field_validator("name", mode="before")
    @classmethod
    def _known_provider(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower() or None
            if value is not None and value not in PROVIDERS:
                raise ValueError(f"unknown provider; known: {', '.join(PROVIDERS)}")
        return value


class Settings(BaseModel):
    """Every setting of convmem, grouped by the part it configures."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    store: StoreSettings = Field(default_factory=StoreSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    threads: ThreadSettings = Field(default_factory=ThreadSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings)
    compaction: CompactionSettings = Field(default_factory=CompactionSettings)
    provider: ProviderSettings = Field(default_factory=ProviderSettings)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment, then ``overrides`` (flat names); raise
        ``ConfigurationError`` when invalid, naming the variable that supplied the bad
        value. An unknown ``CONVMEM_*`` variable is logged as a warning with the nearest
        known name."""
        return cls.load_from(os.environ, **overrides)

    @classmethod
    def load_from(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """As ``load``, from ``env`` instead of the process's environment."""
        for warning in unknown_variables(env):
            log.warning("%s", warning)
        values, sources = _read(env)
        values.update(overrides)
        sources.update({name: name for name in overrides})
        return _validated(values, sources)

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """Only ``values`` (flat names: ``store_url=``, ``max_turns=``…) and the defaults;
        reads no environment variable."""
        return _validated(values, {name: name for name in values})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every setting's flat name (its keyword)."""
        return tuple(_LEAVES)

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every environment variable a setting is read from, each ``CONVMEM_*`` name and
        the seed's, Supabase's and the providers' aliases."""
        return tuple(name for leaf in _LEAVES.values() for name in leaf.variables)

    @property
    def turn_limit(self) -> int:
        """``max_turns`` if set, else the default of the mode (compaction on or off)."""
        if self.threads.max_turns is not None:
            return self.threads.max_turns
        if self.compaction.enabled:
            return MAX_TURNS_WITH_COMPACTION
        return MAX_TURNS_WITHOUT_COMPACTION

    @property
    def thread_limits(self) -> ThreadLimits:
        return ThreadLimits(ttl=timedelta(hours=self.threads.ttl_hours), max_turns=self.turn_limit)

    @property
    def input_limits(self) -> InputLimits:
        return InputLimits(
            max_content_bytes=self.threads.max_content_bytes,
            max_metadata_bytes=self.threads.max_metadata_bytes,
        )

    @property
    def memory_options(self) -> MemoryOptions:
        return MemoryOptions(
            single_instance=self.cache.single_instance,
            consistency=self.cache.consistency,
            redis_breaker_reset_seconds=self.cache.redis_breaker_reset_seconds,
            lease_seconds=self.cache.lease_seconds,
            store_timeout_seconds=self.store.timeout_seconds,
            store_breaker_reset_seconds=self.store.breaker_reset_seconds,
            watch_unannounced=self.cache.watch_unannounced,
        )


class _Leaf:
    """Where one flat setting lives in the tree, and the variables it is read from."""

    __slots__ = ("group", "variables")

    def __init__(self, group: str, variables: tuple[str, ...]) -> None:
        self.group = group
        self.variables = variables


def _leaves() -> dict[str, _Leaf]:
    leaves: dict[str, _Leaf] = {}
    for group, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, _Group)):
            raise TypeError(f"Settings.{group} is not a group of settings")
        for field_name, leaf in model.model_fields.items():
            name = str(leaf.validation_alias)
            if name in leaves:
                raise TypeError(f"two settings are named {name!r}")
            leaves[name] = _Leaf(group, model.variables_of(field_name))
    return leaves


_LEAVES = _leaves()
_TOOL_PREFIXES = ("CONVMEM_TEST_", "CONVMEM_BENCH_", "CONVMEM_CHAOS")
# Never repeated in an error message.
_SECRETS = frozenset(
    {
        "token",
        "client_tokens",
        "encryption_keys",
        "supabase_service_key",
        "cache_key",
        "model_api_key",
        "glm_api_key",
        "kimi_api_key",
        "openai_api_key",
    }
)


def _read(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Each setting's value in ``env`` (its first variable that is set) and that
    variable's name. An empty variable counts as unset (``REDIS_URL=${REDIS_URL:-}`` in a
    compose file), so the next alias or the default applies."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, leaf in _LEAVES.items():
        variable = next((v for v in leaf.variables if env.get(v)), None)
        if variable is not None:
            values[name], sources[name] = env[variable], variable
    return values, sources


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """A warning for each ``CONVMEM_*`` variable in ``env`` that nothing reads (a typo,
    most likely), with the nearest known name."""
    known = set(Settings.variables())
    warnings = []
    for name in sorted(env):
        if not name.startswith("CONVMEM_") or name in known or name.startswith(_TOOL_PREFIXES):
            continue
        nearest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {nearest[0]}?" if nearest else " (see the README's Configuration)"
        warnings.append(f"{name} is not a convmem setting and is ignored{hint}")
    return warnings


def _validated(values: Mapping[str, Any], sources: Mapping[str, str]) -> Settings:
    unknown = sorted(set(values) - set(_LEAVES))
    if unknown:
        hints = []
        for name in unknown:
            nearest = difflib.get_close_matches(name, sorted(_LEAVES), n=1, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (did you mean {nearest[0]!r}?)" if nearest else ""))
        raise ConfigurationError(f"not a convmem setting: {', '.join(hints)}")
    tree: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        tree.setdefault(_LEAVES[name].group, {})[name] = value
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            name = str(err["loc"][1]) if len(err["loc"]) > 1 else ""
            if name in _LEAVES:
                source = sources.get(name, name)
                value = "<hidden>" if name in _SECRETS else repr(values.get(name))
                problems.append(f"{source}={value}: {_plain_message(err['msg'])}")
            else:
                problems.append(_plain_message(err["msg"]))
        raise ConfigurationError(f"invalid convmem settings: {'; '.join(problems)}") from exc


def _plain_message(message: str) -> str:
    """Pydantic's message in the words of this one: ``Value error, x`` is just ``x``."""
    return message.removeprefix("Value error, ")
