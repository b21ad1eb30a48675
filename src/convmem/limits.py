"""Limits on threads (enforced by stores) and on input (checked before any I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class ThreadLimits:
    """How long an idle thread lives (each append extends it) and how many turns it holds."""

    ttl: timedelta = timedelta(hours=3)
    max_turns: int = 50


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Size limits, in UTF-8 bytes, on what a caller may store."""

    max_content_bytes: int = 1_000_000
    max_metadata_bytes: int = 65_536
