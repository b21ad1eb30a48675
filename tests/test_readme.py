"""The README's code runs as written: every Python block is executed as a script (on
SQLite, offline, the Agents SDK's model pointed at the repository's stand-in of the chat
completions API), and every command and option of the command-line synopsis exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from convmem.settings import Settings
from convmem_bench.chat_standin import ChatCompletionsStandIn

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text("utf-8")
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README) if lang == language]


def first_line(code: str) -> str:
    return next(line for line in code.splitlines() if line.strip() and not line.startswith("#"))


@pytest.fixture(scope="module")
def standin() -> Iterator[ChatCompletionsStandIn]:
    server = ChatCompletionsStandIn().start()
    yield server
    server.stop()


def test_the_readme_has_its_python_examples() -> None:
    assert len(blocks("python")) >= 2


@pytest.mark.parametrize("code", blocks("python"), ids=first_line)
def test_a_python_block_runs_as_written(
    code: str, tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, "utf-8")
    env = {
        **os.environ,
        "OPENAI_API_KEY": "stand-in",  # the stand-in checks nothing; no request leaves
        "OPENAI_BASE_URL": standin.base_url,
        "OPENAI_AGENTS_DISABLE_TRACING": "1",
    }
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "a README example prints what it shows"
    assert "Traceback" not in result.stderr


def test_the_agents_example_carries_the_conversation(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    (code,) = [c for c in blocks("python") if "ConvmemSession" in c]
    before = len(standin.requests)
    test_a_python_block_runs_as_written(code, tmp_path, standin)
    sent = standin.requests[before:]
    assert len(sent) == 2
    second = " ".join(str(m.get("content")) for m in sent[1]["body"]["messages"])
    assert "Golden Gate Bridge" in second  # the session gave the model the first exchange


def synopsis() -> list[list[str]]:
    """The command-line synopsis: each line's command words and options."""
    (code,) = [c for c in blocks("sh") if c.startswith("convmem serve")]
    lines = []
    for line in code.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == "convmem":
            lines.append(words)
    return lines


@pytest.mark.parametrize("words", synopsis(), ids=" ".join)
def test_each_command_and_option_of_the_synopsis_exists(words: list[str]) -> None:
    commands = [w for w in words[1:] if re.fullmatch(r"[a-z][a-z-]*(\|[a-z-]+)*", w)]
    options = set(re.findall(r"(--[a-z-]+|-o\b)", " ".join(words)))
    if words[1:] == ["--version"]:
        result = subprocess.run(
            [sys.executable, "-m", "convmem", "--version"], capture_output=True, text=True
        )
        assert result.returncode == 0
        return
    result = subprocess.run(
        [sys.executable, "-m", "convmem", *commands, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for option in options:
        assert re.search(rf"(^|[\s,]){re.escape(option)}\b", result.stdout), (option, words)


def test_every_setting_is_in_the_configuration_table() -> None:
    """A setting a user cannot find is one they cannot set: each ``CONVMEM_*`` variable
    ``Settings`` reads is named in the README."""
    names = {name for name in Settings.variables() if name.startswith("CONVMEM_")}
    missing = sorted(n for n in names if f"`{n}`" not in README and not _in_a_combined_row(n))
    assert not missing, f"not in the README's configuration table: {missing}"


def _in_a_combined_row(name: str) -> bool:
    """Rows such as ``CONVMEM_PG_POOL_MIN_SIZE` / `_MAX_SIZE``: a suffix after a sibling."""
    head, _, _ = name.rpartition("_")
    while head:
        if f"`{head}_" in README and f"`_{name.removeprefix(head + '_')}`" in README:
            return True
        head, _, _ = head.rpartition("_")
    return False
