"""The previous release of convmem, installed from this repository's git history into a
venv of its own, for the rolling-upgrade tests: the new code and the old one serving side
by side on one PostgreSQL and one Redis.

The venv is built once per release (``pip install "convmem[...] @ git+file://…@<commit>"``
from PyPI's packages, about a minute) under ``.cache/previous-release/`` and kept there.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The commit before the work on issue 25 (the release an operator upgrades from).
PREVIOUS_RELEASE = "9ccac84340e042ce33f7abab3d790cc056b8161e"
EXTRAS = "postgres,redis"


def previous_release_python(commit: str = PREVIOUS_RELEASE) -> Path:
    """The Python of a venv holding convmem as of ``commit``; built if it is not there.

    Built under a lock (two test processes wait for one build) and marked complete only
    at the end, so a build that was killed is started again, never used half-made.
    """
    home = ROOT / ".cache" / "previous-release"
    home.mkdir(parents=True, exist_ok=True)
    venv = home / commit[:12]
    python = venv / "bin" / "python"
    done = venv / ".complete"
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return python
        subprocess.run(["rm", "-rf", str(venv)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # (an older pip cannot read a direct git reference with extras)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True, capture_output=True)
        requirement = f"convmem[{EXTRAS}] @ git+file://{ROOT}@{commit}"
        install = subprocess.run(
            [*pip, requirement],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if install.returncode != 0:
            raise RuntimeError(f"installing convmem {commit[:12]} failed: {install.stderr[-3000:]}")
        done.touch()
    return python
