"""The convmem command line, run as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from convmem import Memory, Turn
from convmem_bench.pgbouncer import free_port
from tests.support.services import pg_url


def convmem(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "convmem", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_demo_on_the_embedded_default_shows_the_round_trip_budget(tmp_path: Path) -> None:
    result = convmem("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = re.findall(
        r"│ (\d+)\s+│ (\w+)\s+│ ([\w ]+?)\s+│ (\d+)\s+│ (\d+)\s+│ (\d+)", result.stdout
    )
    assert rows[:3] == [
        ("1", "new", "created", "0", "1", "2"),
        ("2", "cold", "store", "1", "1", "4"),
        ("3", "warm", "L1 cache", "0", "1", "6"),
    ]
    assert "continued, cold cache: 1 read + 1 write; warm: 0 reads + 1" in result.stdout
    assert (tmp_path / "data" / "convmem.db").exists()  # the default: a file under ./data


def test_demo_with_redis_shows_every_tier(clean_pg: str, redis_url: str, redis_prefix: str) -> None:
    pg_database = clean_pg
    os.environ["CONVMEM_CACHE_PREFIX"] = redis_prefix
    try:
        result = convmem("demo", "--store", pg_url(pg_database), "--cache", redis_url)
    finally:
        del os.environ["CONVMEM_CACHE_PREFIX"]
    assert result.returncode == 0, result.stderr
    assert "(L1 + L2 Redis, offline echo model)" in result.stdout
    assert (
        "continued, cold cache: 1 read + 1 write; warm: 0 reads + 1 write; "
        "new process with Redis warm: 0 reads + 1 write"
    ) in result.stdout
    assert "L2 cache (Redis)" in result.stdout


def test_thread_commands_on_postgres(clean_pg: str, tmp_path: Path) -> None:
    url = pg_url(clean_pg)
    assert convmem("migrate", "--store", url).returncode == 0
    assert convmem("demo", "--store", url, "--continuations", "2").returncode == 0
    listed = convmem("threads", "list", "--store", url)
    assert listed.returncode == 0, listed.stderr
    thread_id = re.findall(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", listed.stdout
    )[0]

    shown = convmem("threads", "show", thread_id, "--store", url)
    assert shown.returncode == 0
    assert "question 1" in shown.stdout

    out = tmp_path / "thread.json"
    exported = convmem(
        "threads", "export", thread_id, "--store", url, "--format", "json", "-o", str(out)
    )
    assert exported.returncode == 0
    assert json.loads(out.read_text())["id"] == thread_id

    assert convmem("threads", "delete", thread_id, "--store", url).returncode == 0
    gone = convmem("threads", "show", thread_id, "--store", url)
    assert gone.returncode == 1
    assert f"no live thread {thread_id} without an owner" in gone.stderr
    purged = convmem("threads", "purge", "--store", url)
    assert purged.returncode == 0
    assert "purged 0 expired thread(s)" in purged.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("threads", "show", "not-a-uuid"), "not a thread id"),
        (
            ("threads", "export", "0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f", "--format", "xml"),
            "unknown format",
        ),
        (("demo", "--store", "mysql://x/y"), "unsupported store URL scheme"),
    ],
)
def test_bad_input_is_a_clear_message_not_a_traceback(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = convmem(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_keygen_then_rotate_keys_seals_every_thread_and_reports(tmp_path: Path) -> None:
    """The operator's path: threads written in clear and under an old key, a new key put
    first, `convmem rotate-keys`, then the old key removed."""
    old_key = convmem("keygen").stdout.strip()
    new_key = convmem("keygen").stdout.strip()
    assert len(old_key) == 44
    assert old_key != new_key
    url = f"sqlite:///{tmp_path}/rotate.db"

    async def write() -> list[str]:
        async with (
            Memory.from_url(url) as plain,
            Memory.from_url(url, encryption_keys=[old_key]) as sealed,
        ):
            ids = [(await plain.create_thread(turns=[Turn(role="user", content="clear")])).id]
            for owner in ("ann", "bob"):
                thread = await sealed.create_thread(
                    owner=owner, turns=[Turn(role="user", content=f"for {owner}")]
                )
                ids.append(thread.id)
            return ids

    ids = asyncio.run(write())
    both = {
        "CONVMEM_STORE_URL": url,
        "CONVMEM_ENCRYPTION_KEYS": f"{new_key},{old_key}",
        "CONVMEM_ENCRYPTION_ACCEPT_PLAINTEXT": "1",
    }
    result = convmem("rotate-keys", "--batch", "2", env=both)
    assert result.returncode == 0, result.stderr
    assert "scanned 2 thread(s)" in result.stdout  # progress after the first page
    assert "done: 3 thread(s) scanned, 3 resealed, 0 gone or expired, 0 failed" in result.stdout
    again = convmem("rotate-keys", env=both)
    assert "3 thread(s) scanned, 0 resealed" in again.stdout

    async def read() -> list[str]:
        async with Memory.from_url(url, encryption_keys=[new_key]) as memory:
            threads = [
                await memory.get_thread(thread_id, owner=owner)
                for thread_id, owner in zip(ids, (None, "ann", "bob"), strict=True)
            ]
            return [t.turns[0].content for t in threads if t is not None]

    assert asyncio.run(read()) == ["clear", "for ann", "for bob"]
    # The rotation was complete: the old key alone now opens nothing, and is refused.
    lost = convmem("rotate-keys", env={**both, "CONVMEM_ENCRYPTION_KEYS": old_key})
    assert lost.returncode == 1
    assert lost.stderr.startswith("error: CONVMEM_ENCRYPTION_KEYS holds none of the keys")
    assert len(lost.stderr.strip().splitlines()) == 1
    # A thread under a key the rotation is not given is reported, and the command fails.
    third_key = convmem("keygen").stdout.strip()

    async def write_under_third_key() -> str:
        async with Memory.from_url(url, encryption_keys=[third_key, new_key]) as memory:
            return (await memory.create_thread(turns=[Turn(role="user", content="k3")])).id

    under_third = asyncio.run(write_under_third_key())
    partial = convmem("rotate-keys", env={**both, "CONVMEM_ENCRYPTION_KEYS": new_key})
    assert partial.returncode == 1
    assert f"failed: {under_third}" in partial.stderr
    assert "not among the configured encryption keys" in partial.stderr


def convmem_without(
    missing: tuple[str, ...], *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command line in a process where ``missing`` modules cannot be imported, as in
    an install without the extra that brings them."""
    probe = (
        "import sys\n"
        f"for name in {missing!r}: sys.modules[name] = None\n"
        "from convmem.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
        timeout=120,
    )


@pytest.mark.parametrize(
    ("missing", "args", "env", "extra", "what"),
    [
        (
            ("redis",),
            ("threads", "list"),
            {"CONVMEM_CACHE_URL": "redis://127.0.0.1:1"},
            "redis",
            "CONVMEM_CACHE_URL",
        ),
        (("pybase64", "cryptography"), ("keygen",), {}, "encryption", "convmem keygen"),
        (
            ("psycopg", "psycopg_pool"),
            ("threads", "list", "--store", "postgresql://x@127.0.0.1/x"),
            {},
            "postgres",
            "the postgresql store",
        ),
        (
            ("pybase64",),
            ("threads", "list"),
            {"CONVMEM_ENCRYPTION_KEYS": "a" * 43 + "="},
            "encryption",
            "CONVMEM_ENCRYPTION_KEYS",
        ),
    ],
)
def test_a_missing_extra_is_one_line_that_names_it_and_how_to_install_it(
    tmp_path: Path,
    missing: tuple[str, ...],
    args: tuple[str, ...],
    env: dict[str, str],
    extra: str,
    what: str,
) -> None:
    result = convmem_without(missing, *args, cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {what}")
    assert f"needs the '{extra}' extra" in lines[0]
    assert f"pip install '.[{extra}]'" in lines[0]  # Rich markup did not swallow [extra]
    assert any(name in lines[0] for name in missing)


# -- start-up: one line that names the cause, the variable and what to do -------------


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "convmem on http" not in result.stdout  # nothing was announced
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_serve_on_a_postgres_that_does_not_answer_says_why(tmp_path: Path) -> None:
    port = free_port()
    line = one_line_error(
        convmem("serve", "--store", f"postgresql://postgres@127.0.0.1:{port}/test", cwd=tmp_path)
    )
    assert f"cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:{port}/test" in line
    assert "Connection refused" in line


def test_serve_on_a_database_that_does_not_exist_says_so(tmp_path: Path) -> None:
    line = one_line_error(
        convmem("serve", "--store", "postgresql://postgres@127.0.0.1:5432/no_such_db_here")
    )
    assert 'database "no_such_db_here" does not exist' in line


def test_serve_on_a_busy_port_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(convmem("serve", cwd=tmp_path, env={"CONVMEM_PORT": str(port)}))
    assert f"port {port} on 127.0.0.1 is in use" in line
    assert "CONVMEM_PORT" in line


def test_a_bad_value_names_the_variable_that_supplied_it(tmp_path: Path) -> None:
    line = one_line_error(convmem("serve", cwd=tmp_path, env={"EXAI_WS_PORT": "eighty"}))
    assert "EXAI_WS_PORT='eighty'" in line
    assert "valid integer" in line


def test_a_misspelt_variable_is_warned_with_the_nearest_name(tmp_path: Path) -> None:
    result = convmem(
        "threads", "list", cwd=tmp_path, env={"CONVMEM_STOR_URL": f"sqlite:///{tmp_path}/x.db"}
    )
    assert result.returncode == 0, result.stderr
    assert (
        "CONVMEM_STOR_URL is not a convmem setting and is ignored; did you mean"
        " CONVMEM_STORE_URL?" in result.stderr
    )


def test_a_redis_that_does_not_answer_is_named_and_health_says_degraded(
    tmp_path: Path,
) -> None:
    port, dead = free_port(), free_port()
    env = {
        **os.environ,
        "CONVMEM_PORT": str(port),
        "CONVMEM_CACHE_URL": f"redis://127.0.0.1:{dead}",
        "NO_COLOR": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "convmem", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = None
        for _ in range(100):
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health is not None
        assert health.status_code == 200  # the store serves: the instance stays in rotation
        assert health.json() == {
            "ok": True,
            "status": "degraded",
            "store": "ok",
            "redis": "down",
        }
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert f"Redis does not answer (ConnectionError: Error 111 connecting to 127.0.0.1:{dead}" in (
        stderr
    )
    assert "L1 is bypassed" in stderr


# -- a CLI for people and for scripts ------------------------------------------------


def test_version_and_every_flag_described(tmp_path: Path) -> None:
    shown = convmem("--version", cwd=tmp_path)
    assert shown.returncode == 0
    assert re.fullmatch(r"convmem \d+\.\d+\.\d+\S*\n", shown.stdout)
    commands = [
        (),
        ("demo",),
        ("serve",),
        ("mcp",),
        ("pal",),
        ("migrate",),
        ("keygen",),
        ("rotate-keys",),
        ("threads", "list"),
        ("threads", "show"),
        ("threads", "export"),
        ("threads", "delete"),
        ("threads", "purge"),
    ]
    for command in commands:
        helped = convmem(*command, "--help", cwd=tmp_path)
        assert helped.returncode == 0, helped.stderr
        assert "<bool>" not in helped.stdout
        options = helped.stdout.split("Options:", 1)[1]
        for line in options.splitlines():
            flag = re.match(r"\s+(-\w, )?(--[\w-]+)( <[^>]+>)?\s*(.*)", line)
            if flag:  # every option line says what the option is for
                assert flag.group(4).strip(), f"{' '.join(command)} {flag.group(2)}: {line!r}"


def test_threads_of_other_owners_are_found_with_owner_or_all_owners(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/owners.db"

    async def write() -> dict[str | None, str]:
        async with Memory.from_url(url) as memory:
            made = {}
            for owner in ("default", "alice", None):
                thread = await memory.create_thread(
                    owner=owner, tool_name="chat", turns=[Turn(role="user", content=f"hi {owner}")]
                )
                made[owner] = thread.id
            return made

    made = asyncio.run(write())
    env = {"CONVMEM_STORE_URL": url}
    # Without --owner: the threads without an owner, and a hint about the others.
    mine = convmem("threads", "list", "--json", env=env)
    assert [t["id"] for t in json.loads(mine.stdout)["threads"]] == [made[None]]
    every = json.loads(convmem("threads", "list", "--all-owners", "--json", env=env).stdout)
    assert {(t["id"], t["owner"]) for t in every["threads"]} == {(v, k) for k, v in made.items()}
    assert every["next_cursor"] is None
    alice = json.loads(convmem("threads", "list", "--owner", "alice", "--json", env=env).stdout)
    assert [t["owner"] for t in alice["threads"]] == ["alice"]
    none_for_bob = convmem("threads", "list", "--owner", "bob", env=env)
    assert none_for_bob.returncode == 0
    assert "no live threads of owner 'bob'" in none_for_bob.stderr
    assert "--all-owners" in none_for_bob.stderr
    # show: a thread of another owner is not found without --owner, with a hint.
    hidden = convmem("threads", "show", made["default"], env=env)
    assert hidden.returncode == 1
    assert "CONVMEM_TOKEN's client is owner 'default'" in hidden.stderr
    assert "--owner NAME" in hidden.stderr
    shown = convmem("threads", "show", made["default"], "--owner", "default", env=env)
    assert "hi default" in shown.stdout
    as_json = convmem("threads", "show", made["alice"], "--all-owners", "--json", env=env)
    assert json.loads(as_json.stdout)["owner"] == "alice"
    both = convmem("threads", "show", made["alice"], "--all-owners", "--owner", "x", env=env)
    assert both.returncode == 2
    deleted = convmem("threads", "delete", made["alice"], "--all-owners", env=env)
    assert deleted.returncode == 0, deleted.stderr
    gone = convmem("threads", "show", made["alice"], "--all-owners", env=env)
    assert gone.returncode == 1
    assert f"no live thread {made['alice']}" in gone.stderr


def test_a_piped_listing_is_tab_separated_and_never_cut(tmp_path: Path) -> None:
    """Piped (not a terminal), whatever COLUMNS says: one line per thread, nothing cut."""
    url = f"sqlite:///{tmp_path}/piped.db"

    async def write() -> str:
        async with Memory.from_url(url) as memory:
            made = await memory.create_thread(
                owner="a-rather-long-owner-name", tool_name="a-rather-long-tool-name"
            )
            return made.id

    thread_id = asyncio.run(write())
    listed = convmem(
        "threads", "list", "--all-owners", env={"CONVMEM_STORE_URL": url, "COLUMNS": "40"}
    )
    lines = listed.stdout.splitlines()
    assert lines[0].split("\t") == [
        "id",
        "owner",
        "tool",
        "turns",
        "updated (UTC)",
        "expires (UTC)",
        "parent",
    ]
    fields = lines[1].split("\t")
    assert fields[:4] == [thread_id, "a-rather-long-owner-name", "a-rather-long-tool-name", "0"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", fields[4])


def test_threads_update_renames_a_sealed_thread(tmp_path: Path) -> None:
    """With encryption on, the title is stored sealed and the CLI shows it opened."""
    key = convmem("keygen").stdout.strip()
    url = f"sqlite:///{tmp_path}/update.db"
    env = {"CONVMEM_ENCRYPTION_KEYS": key}

    async def write() -> str:
        async with Memory.from_url(url, encryption_keys=[key]) as memory:
            thread = await memory.create_thread(
                owner="ann", metadata={"tag": 1}, turns=[Turn(role="user", content="hi")]
            )
            return thread.id

    thread_id = asyncio.run(write())
    renamed = convmem(
        "threads",
        "update",
        thread_id,
        "--title",
        "Lisbon",
        "--all-owners",
        "--store",
        url,
        env=env,
    )
    assert renamed.returncode == 0, renamed.stderr
    assert f'updated {thread_id} (version 2): {{"tag":1,"title":"Lisbon"}}' in renamed.stdout
    replaced = convmem(
        "threads",
        "update",
        thread_id,
        "--metadata",
        '{"b": [1]}',
        "--owner",
        "ann",
        "--store",
        url,
        env=env,
    )
    assert replaced.returncode == 0, replaced.stderr
    assert '{"b":[1]}' in replaced.stdout
    assert "Lisbon" not in (tmp_path / "update.db").read_bytes().decode("latin-1")
    for bad, message in (
        (("--metadata", "[1]"), "--metadata must be a JSON object"),
        (("--metadata", "{nope"), "--metadata is not JSON"),
        ((), "update_thread needs metadata=, title= or both"),
    ):
        refused = convmem(
            "threads", "update", thread_id, "--owner", "ann", *bad, "--store", url, env=env
        )
        assert refused.returncode != 0
        assert message in refused.stderr
        assert "Traceback" not in refused.stderr
    other = convmem("threads", "update", thread_id, "--title", "x", "--store", url, env=env)
    assert other.returncode == 1
    assert f"no live thread {thread_id} without an owner" in other.stderr
