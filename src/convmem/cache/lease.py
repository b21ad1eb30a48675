"""``Lease``: when an instance may trust its cache tiers while other instances write.

An instance hears of other instances' writes through the invalidation channel. It
trusts its L1 (and reads L2) only while it has heard from Redis on that channel within
the last ``length`` seconds: a hung, dead or unreachable Redis makes the lease lapse,
and reads go to the store. After a break (a lapse, or a lost subscription) it trusts
them again only after ``length`` seconds of unbroken contact: writers that could not
reach Redis during the break replay their fences and announcements in that time
(they retry every ``length / 4``), so a copy cached before or during the break is
fenced or announced before it can be served. Together: no read returns a version
older than one acknowledged more than ``length`` before the read began, whatever
Redis does (see RELIABILITY.md).

"Heard" is dated by when the heartbeat was *sent*, not when its answer came: Redis
answers a PING after every message published before it, so a PING sent at ``t`` and
answered proves every announcement made before ``t`` has arrived.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Lease:
    def __init__(self, length: float = 1.0, *, timer: Callable[[], float] = time.monotonic):
        if length <= 0:
            raise ValueError("a lease must be longer than 0 seconds")
        self.length = length
        self._timer = timer
        self._heard_at = -math.inf  # when the newest heartbeat we have an answer to was sent
        self._since = -math.inf  # when contact came back after a break (-inf: no break yet)
        self._broken = False  # the subscription was lost: contact starts over

    def heard(self, age: float = 0.0) -> bool:
        """Redis answered a heartbeat sent ``age`` seconds ago; True if that ends a break.

        A break is a lost subscription or a lapsed lease (no answer for longer than the
        lease, counted up to now, when the answer arrives). The caller drops its L1 when
        a break ends: copies from before it may be stale.
        """
        now = self._timer()
        # Since the newest answer, or since the last break ended (its answer may be late).
        last = max(self._heard_at, self._since)
        lapsed = last > -math.inf and now - last > self.length
        broken = self._broken or lapsed
        if broken:
            self._since = now  # trusted again one whole lease from now
            self._broken = False
        self._heard_at = max(self._heard_at, now - age)
        return broken

    def lost(self) -> None:
        """The subscription broke: nothing is trusted until contact is back and has lasted."""
        self._broken = True

    def fresh(self) -> bool:
        """Has Redis answered within the lease (even if trust has not returned yet)?"""
        return not self._broken and self._timer() - self._heard_at <= self.length

    def valid(self) -> bool:
        """May the cache tiers be trusted now?"""
        if self._broken:
            return False
        now = self._timer()
        return now - self._heard_at <= self.length and now - self._since >= self.length
