"""The Lease on a fake timer: when cached copies may be trusted, and when not."""

from __future__ import annotations

from convmem.cache.lease import Lease
from tests.support.clock import FakeTimer


def test_nothing_is_trusted_before_redis_first_answers() -> None:
    timer = FakeTimer()
    lease = Lease(1.0, timer=timer)
    assert not lease.valid()
    assert not lease.heard(0.01)  # the first answer is no break: trusted at once
    assert lease.valid()


def test_the_lease_lapses_a_lease_after_the_newest_answered_heartbeat_was_sent() -> None:
    timer = FakeTimer()
    lease = Lease(1.0, timer=timer)
    lease.heard(0.0)
    timer.now += 0.5
    lease.heard(0.2)  # sent 0.2 s ago: heard as of 0.3 s after the first
    timer.now += 0.8
    assert lease.valid()  # 0.5 s after that send
    timer.now += 0.51
    assert not lease.valid()


def test_after_a_lapse_trust_returns_only_after_a_whole_lease_of_contact() -> None:
    timer = FakeTimer()
    lease = Lease(1.0, timer=timer)
    lease.heard(0.0)
    timer.now += 1.5  # silence: the lease lapsed
    assert lease.heard(1.2)  # a late answer to a heartbeat sent during the silence
    assert not lease.valid()
    timer.now += 0.9
    lease.heard(0.0)
    assert not lease.valid()  # writers that missed Redis have had 0.9 s to replay
    timer.now += 0.1
    lease.heard(0.0)
    assert lease.valid()


def test_a_lost_subscription_is_a_break_even_if_answers_kept_coming() -> None:
    timer = FakeTimer()
    lease = Lease(1.0, timer=timer)
    lease.heard(0.0)
    lease.lost()
    assert not lease.valid()
    assert lease.heard(0.0)  # resubscribed: a break ends
    assert not lease.valid()
    timer.now += 1.0
    lease.heard(0.0)
    assert lease.valid()
