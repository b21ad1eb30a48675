"""Tokens, owners, and the warning for an exposed server without a token."""

from __future__ import annotations

import pytest

from convmem import ConfigurationError, Settings
from convmem.server.app import warn_if_exposed
from convmem.server.auth import TokenTable


def test_tokens_map_to_their_client() -> None:
    table = TokenTable.from_settings("solo", "alice=ta, bob=tb")
    assert table.required
    assert table.owner_of("solo") == "default"
    assert table.owner_of("ta") == "alice"
    assert table.owner_of("tb") == "bob"
    assert table.owner_of("tb ") is None
    assert table.owner_of(None) is None
    assert not TokenTable.from_settings(None, None).required


@pytest.mark.parametrize("bad", ["alice", "=t", "alice=", "alice:t"])
def test_malformed_client_tokens_are_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="CONVMEM_CLIENT_TOKENS"):
        TokenTable.from_settings(None, bad)


def test_an_exposed_server_without_a_token_is_warned_about() -> None:
    exposed = warn_if_exposed(Settings.load(host="0.0.0.0"))
    assert exposed is not None
    assert "WITHOUT A TOKEN" in exposed
    assert warn_if_exposed(Settings.load(host="0.0.0.0", token="t")) is None
    assert warn_if_exposed(Settings.load(host="127.0.0.1")) is None
    assert warn_if_exposed(Settings.load(host="localhost")) is None
    assert warn_if_exposed(Settings.load(host="::1")) is None


def test_the_old_daemons_variables_set_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_WS_HOST", "127.0.0.2")
    monkeypatch.setenv("EXAI_WS_PORT", "9000")
    settings = Settings.load()
    assert (settings.server.host, settings.server.port) == ("127.0.0.2", 9000)
