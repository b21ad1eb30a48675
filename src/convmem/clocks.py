"""The two kinds of time convmem reads, named apart.

- **Wall time** (``WallClock``, ``utc_now``): when a turn was written, when a thread
  expires. Stores take it as ``clock=``; tests pass a fake one to expire threads.
- **Monotonic time** (``Timer``, ``time.monotonic``): how long since a Redis heartbeat,
  a breaker opened, an L1 copy was put. Everything that measures a duration takes it
  as ``timer=``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

WallClock = Callable[[], datetime]
Timer = Callable[[], float]


def utc_now() -> datetime:
    """The default wall clock: aware UTC, microsecond precision like both databases."""
    return datetime.now(UTC)
