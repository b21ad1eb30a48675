"""Settings: CONVMEM_* variables, the seed's aliases, eager validation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import convmem
from convmem import ConfigurationError, Memory, Settings
from convmem.stores.postgres import PostgresStore
from convmem.stores.sqlite import SqliteStore


def test_defaults_match_the_server_convmem_replaces(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.load()
    assert settings.store.url == "sqlite:///./data/convmem.db"
    assert settings.thread_limits.ttl == timedelta(hours=3)
    assert settings.turn_limit == 50
    assert (settings.cache.l1_ttl_seconds, settings.cache.l2_ttl_seconds) == (300, 1800)


def test_the_seeds_variable_names_are_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERSATION_TIMEOUT_HOURS", "5")
    monkeypatch.setenv("MAX_CONVERSATION_TURNS", "20")
    monkeypatch.setenv("L1_CACHE_TTL_SECS", "60")
    monkeypatch.setenv("L2_CACHE_TTL_SECS", "600")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    settings = Settings.load()
    assert settings.threads.ttl_hours == 5
    assert settings.turn_limit == 20
    assert settings.cache.l1_ttl_seconds == 60
    assert settings.cache.l2_ttl_seconds == 600
    assert settings.cache.url == "redis://127.0.0.1:6379/3"


def test_an_empty_variable_counts_as_unset() -> None:
    settings = Settings.load_from({"CONVMEM_CACHE_URL": "", "GLM_API_KEY": "", "ZAI_API_KEY": "k"})
    assert settings.cache.url is None
    assert settings.provider.glm_api_key is not None
    assert settings.provider.glm_api_key.get_secret_value() == "k"


def test_the_convmem_name_wins_over_an_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_CONVERSATION_TURNS", "20")
    monkeypatch.setenv("CONVMEM_MAX_TURNS", "30")
    assert Settings.load().turn_limit == 30


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CONVMEM_MAX_TURNS", "0", "CONVMEM_MAX_TURNS='0': Input should be greater than 0"),
        ("CONVMEM_MAX_TURNS", "many", "CONVMEM_MAX_TURNS='many': Input should be a valid integer"),
        ("CONVERSATION_TIMEOUT_HOURS", "-1", "CONVERSATION_TIMEOUT_HOURS='-1': Input should be"),
        ("CONVMEM_STORE_URL", "mysql://x/y", "unsupported store URL scheme 'mysql'"),
    ],
)
def test_a_bad_setting_is_a_configuration_error_that_names_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        Memory.from_env()


def test_from_env_builds_the_store_the_url_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVMEM_STORE_URL", "postgres://u:secret@127.0.0.1:6543/db")
    memory = Memory.from_env()
    assert isinstance(memory.store, PostgresStore)
    assert not memory.store.prepared_statements  # 6543 is Supavisor's transaction mode
    memory = Memory.from_url("sqlite:///./somewhere/x.db")
    assert isinstance(memory.store, SqliteStore)
    assert memory.store.path == "./somewhere/x.db"


def test_prepared_statements_follow_the_url_flag() -> None:
    store = PostgresStore.from_url("postgresql://u@h:5432/db?prepared_statements=false")
    assert not store.prepared_statements
    assert "prepared_statements" not in store.conninfo
    with pytest.raises(ConfigurationError, match="prepared_statements"):
        PostgresStore.from_url("postgresql://u@h/db?prepared_statements=maybe")


def test_passwords_never_appear_in_errors() -> None:
    from convmem.stores import redact_url, store_from_url

    assert redact_url("postgresql://u:hunter2@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(ConfigurationError) as caught:
        store_from_url("mongodb://u:hunter2@h/db")
    assert "hunter2" not in str(caught.value)


def test_a_bad_sqlite_url_is_explained() -> None:
    with pytest.raises(ConfigurationError, match="sqlite:///"):
        SqliteStore.from_url("sqlite://relative.db")


def test_the_public_face_is_sorted_and_complete() -> None:
    assert convmem.__all__ == sorted(convmem.__all__)
    for name in convmem.__all__:
        assert getattr(convmem, name) is not None
    assert {"Memory", "Thread", "Turn", "ConvMemError"} <= set(convmem.__all__)


def test_importing_convmem_imports_no_database_driver() -> None:
    import subprocess
    import sys

    code = "import sys, convmem; print('psycopg' in sys.modules, 'sqlite3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


async def test_memory_reads_no_environment_and_from_env_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CONVMEM_MAX_TURNS", "7")
    monkeypatch.setenv("CONVMEM_STORE_URL", f"sqlite:///{tmp_path}/env.db")
    async with Memory.from_url(f"sqlite:///{tmp_path}/url.db") as by_url:
        assert by_url.max_turns == 50  # the default, not CONVMEM_MAX_TURNS
        assert await by_url.ping_cache() is None  # no L2: REDIS_URL was not read
    async with Memory(SqliteStore(tmp_path / "given.db")) as given:
        assert given.max_turns == 50
        assert await given.ping_cache() is None
    async with Memory.from_env() as by_env:
        assert by_env.max_turns == 7
        assert await by_env.ping_cache() is True
        assert isinstance(by_env.store, SqliteStore)
        assert by_env.store.path.endswith("env.db")


def test_memory_takes_a_store_not_a_url() -> None:
    with pytest.raises(TypeError, match="from_url"):
        Memory("sqlite:///x.db")  # type: ignore[arg-type]


def test_the_settings_are_one_tree_grouped_by_part() -> None:
    settings = Settings.load_from(
        {
            "EXAI_WS_PORT": "9000",
            "REDIS_URL": "redis://127.0.0.1:6379/1",
            "CONVMEM_WS_CALL_TIMEOUT_SECONDS": "60",
            "CONVMEM_COMPACTION": "true",
            "OPENAI_API_KEY": "sk-test",
            "CONVMEM_MODEL": "gpt-test",
        }
    )
    assert settings.server.port == 9000
    assert settings.cache.url == "redis://127.0.0.1:6379/1"
    assert settings.daemon.call_timeout_seconds == 60
    assert settings.compaction.enabled
    assert settings.provider.openai_api_key is not None
    assert settings.provider.openai_api_key.get_secret_value() == "sk-test"
    assert settings.provider.model == "gpt-test"
    assert settings.turn_limit == 2000  # the mode's default: compaction is on
    # Each flat name is one setting's, in one group.
    names = Settings.names()
    assert len(names) == len(set(names))
    assert {"store_url", "cache_url", "max_turns", "provider", "encryption_keys"} <= set(names)


def test_the_defaults_are_those_of_the_parts_they_configure() -> None:
    from convmem.compaction_policy import CompactionPolicy
    from convmem.limits import HISTORY_TOKENS, InputLimits, ThreadLimits
    from convmem.options import MemoryOptions

    settings = Settings.of()
    assert settings.memory_options == MemoryOptions()
    assert settings.thread_limits == ThreadLimits()
    assert settings.input_limits.max_content_bytes == InputLimits().max_content_bytes
    assert settings.input_limits.max_metadata_bytes == InputLimits().max_metadata_bytes
    assert settings.compaction.policy == CompactionPolicy()
    assert settings.server.history_tokens == HISTORY_TOKENS


def test_a_name_that_is_no_setting_is_refused_with_the_nearest() -> None:
    with pytest.raises(ConfigurationError, match=r"'l1_ttl' \(did you mean 'l1_ttl_seconds'\?\)"):
        Settings.of(l1_ttl=5)
    with pytest.raises(ConfigurationError, match="not a convmem setting: 'max_turn'"):
        Memory.from_url("sqlite:///unused.db", max_turn=5)


def test_a_bad_provider_setting_names_its_variable_and_hides_keys() -> None:
    with pytest.raises(ConfigurationError, match="CONVMEM_PROVIDER='gemini': unknown provider"):
        Settings.load_from({"CONVMEM_PROVIDER": "gemini"})
    with pytest.raises(ConfigurationError, match="CONVMEM_CACHE_KEY=<hidden>") as caught:
        Settings.load_from({"CONVMEM_CACHE_KEY": "not-a-key-at-all"})
    assert "not-a-key-at-all" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="CONVMEM_MODEL_MAX_RETRIES='-1'"):
        Settings.load_from({"CONVMEM_MODEL_MAX_RETRIES": "-1"})


async def test_the_provider_is_read_from_the_settings_not_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from convmem.providers import provider_for

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    assert provider_for(Settings.of().provider).name == "echo"  # of() reads no variable
    openai = provider_for(Settings.load().provider)
    assert openai.name == "openai"
    await openai.aclose()
    assert provider_for(Settings.of(provider="echo", openai_api_key="k").provider).name == "echo"
