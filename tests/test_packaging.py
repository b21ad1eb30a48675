"""The wheel holds the library, the server and the CLI, and serving needs no extra."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q")
# What only an extra brings (pal-mcp-server installs its code as `utils`, `tools`, …).
OPTIONAL_DRIVERS = ("redis", "psycopg", "psycopg_pool", "postgrest", "agents", "utils", "tools")


def _build_wheel(out: Path) -> Path:
    subprocess.run(
        [*PIP_WHEEL, "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("convmem-*.whl")
    return wheel


def test_the_wheel_ships_no_benchmark_and_no_stand_in(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    modules = [n for n in names if n.startswith("convmem/")]
    assert "convmem/cli.py" in modules
    assert "convmem/server/app.py" in modules
    assert "convmem/py.typed" in modules
    assert any(n.startswith("convmem/stores/migrations/postgres/0001_") for n in modules)
    assert "convmem/stores/migrations/postgres/schema.sql" in modules
    assert "convmem/stores/migrations/supabase/security.sql" in modules
    unwanted = [n for n in modules if "bench" in n or "standin" in n or "stand_in" in n]
    assert unwanted == []
    assert not any(n.startswith(("tests/", "bench/", "convmem_bench/")) for n in names)
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"postgres", "redis", "supabase", "all", "bench", "dev"} <= extras


def test_serving_imports_no_optional_driver() -> None:
    """`pip install convmem` alone serves on SQLite: no driver is imported until it is used."""
    probe = (
        "import sys, convmem, convmem.cli, convmem.server.app;"
        "from convmem import Memory;"
        "import asyncio;"
        "asyncio.run(Memory.from_url('sqlite:///:memory:').open());"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {OPTIONAL_DRIVERS!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
