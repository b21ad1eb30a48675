"""The Docker deployment, checked without a Docker engine (none runs on this machine):
docker-compose's own parser validates the compose file, and the files say what they must."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_docker_compose_validates_the_file(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed: run `make deps`"
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        [binary, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_the_stack_has_the_daemon_redis_postgres_and_a_redis_browser() -> None:
    services = compose()["services"]
    assert {"daemon", "migrate", "postgres", "redis", "redis-browser"} <= set(services)
    daemon = services["daemon"]
    assert daemon["environment"]["CONVMEM_CACHE_URL"] == "redis://redis:6379/0"
    assert daemon["environment"]["CONVMEM_STORE_URL"].startswith("postgresql://")
    assert daemon["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["migrate"]
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["redis"]
    assert any("redis.conf" in volume for volume in services["redis"]["volumes"])


def test_no_secret_is_committed() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text  # taken from .env, required
    assert all(s.get("env_file") in (None, ".env") for s in compose()["services"].values())
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_redis_persists_and_never_evicts_keys_without_a_ttl() -> None:
    settings = dict(
        line.split(None, 1)
        for line in (ROOT / "deploy" / "redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings["appendonly"] == "yes"
    assert settings["maxmemory-policy"].startswith("volatile-")  # only keys with a TTL


def test_the_image_is_multi_stage_non_root_with_a_real_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in dockerfile
    assert "/health" in dockerfile.split("HEALTHCHECK", 1)[1]


def test_the_build_context_leaves_out_the_venv_git_and_data() -> None:
    """Without a .dockerignore the context would carry .venv (hundreds of MB), .git and
    the SQLite data; what the Dockerfile copies must stay in."""
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "data", ".env"} <= ignored
    copied = [
        part
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for part in line.split()[1:-1]
    ]
    assert copied == ["pyproject.toml", "README.md", "src"]
    assert not ignored & set(copied)
