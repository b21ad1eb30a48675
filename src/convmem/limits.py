"""Limits on threads (enforced by stores) and on input (checked before any I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

# The prompt budget of a continued request's history when none is given (estimated
# tokens): what the server convmem replaces sent.
HISTORY_TOKENS: Final = 8000

# Redis connections per instance (per node on a cluster): redis-py would open one per
# concurrent call without bound.
REDIS_MAX_CONNECTIONS: Final = 64


@dataclass(frozen=True, slots=True)
class ThreadLimits:
    """How long an idle thread lives (each append extends it) and how many turns it holds."""

    ttl: timedelta = timedelta(hours=3)
    max_turns: int = 50


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Size limits on everything a caller may store, checked before any I/O.

    Every string and list a client sends is bounded, so no field can grow a process (or
    a cache's memory) past what its byte budget accounts for.
    """

    max_content_bytes: int = 1_000_000  # UTF-8 bytes of a turn's content
    max_metadata_bytes: int = 65_536  # JSON bytes of a metadata object
    max_name_chars: int = 200  # tool_name, model_provider, model_name, owner
    max_key_chars: int = 200  # a turn's idempotency key
    max_paths: int = 100  # files (and images) named by one turn
    max_path_chars: int = 1024  # one file or image path
    max_turns_per_call: int = 1000  # turns in one create or append
