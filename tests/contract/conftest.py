"""The contract runs on every store twice: as is, and sealed by encryption at rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from convmem.encryption import Encryption, new_key
from tests.conftest import BACKENDS, Backend, make_backend
from tests.support.clock import FakeClock
from tests.support.sealed import SealedStore

_ENCRYPTION = Encryption([new_key()])


@pytest.fixture(
    params=[(name, sealed) for sealed in (False, True) for name in BACKENDS],
    ids=lambda p: f"{p[0]}-sealed" if p[1] else p[0],
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    name, sealed = request.param
    made = make_backend(name, request, tmp_path, FakeClock())
    async with made.store:
        yield replace(made, store=SealedStore(made.store, _ENCRYPTION)) if sealed else made


@pytest.fixture(params=BACKENDS)
async def raw_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Every store as is: for the maintenance calls, which work on stored payloads."""
    made = make_backend(request.param, request, tmp_path, FakeClock())
    async with made.store:
        yield made
