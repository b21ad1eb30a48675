"""Property-based: random interleavings of creates, appends, reads, invalidations and
evictions on two instances, checked against a model of what was committed.

The property: an instance never serves a version older than the newest it has
seen committed for that thread (its own writes, what it served before, and the
invalidations delivered to it), and what it serves is exactly a committed prefix.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from typing import Any

import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from convmem import Memory, Settings, Turn

REDIS_URL = os.environ.get("CONVMEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
INSTANCES = (0, 1)


class CacheModel(RuleBasedStateMachine):
    threads = Bundle("threads")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="convmem-model-")
        self.prefix = f"convmem-model-{uuid.uuid4().hex[:10]}:"
        config = Settings.of(
            store_url=f"sqlite:///{self.dir}/model.db",
            cache_url=REDIS_URL,
            cache_prefix=self.prefix,
            max_turns=1000,
        )
        self.memories = [Memory.from_settings(config) for _ in INSTANCES]
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.committed: dict[str, list[str]] = {}
        self.seen: list[dict[str, int]] = [{} for _ in INSTANCES]
        self.counter = 0

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    @initialize()
    def open(self) -> None:
        for memory in self.memories:
            self.run(memory.open())

    def teardown(self) -> None:
        for memory in self.memories:
            self.run(memory.aclose())
        self.loop.close()
        for key in self.redis.scan_iter(match=f"{self.prefix}*"):
            self.redis.delete(key)
        self.redis.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _note(self, instance: int, thread_id: str, version: int) -> None:
        self.seen[instance][thread_id] = max(self.seen[instance].get(thread_id, 0), version)

    @rule(target=threads, instance=st.sampled_from(INSTANCES))
    def create(self, instance: int) -> str:
        self.counter += 1
        content = f"c{self.counter}"
        thread = self.run(
            self.memories[instance].create_thread(turns=[Turn(role="user", content=content)])
        )
        self.committed[thread.id] = [content]
        self._note(instance, thread.id, 1)
        return str(thread.id)

    @rule(thread_id=threads, instance=st.sampled_from(INSTANCES), count=st.integers(1, 3))
    def append(self, thread_id: str, instance: int, count: int) -> None:
        contents = []
        for _ in range(count):
            self.counter += 1
            contents.append(f"a{self.counter}")
        thread = self.run(
            self.memories[instance].add_turns(
                thread_id, [Turn(role="assistant", content=c) for c in contents]
            )
        )
        self.committed[thread_id] += contents
        assert [t.content for t in thread.turns] == self.committed[thread_id]
        self._note(instance, thread_id, thread.version)

    @rule(thread_id=threads, instance=st.sampled_from(INSTANCES))
    def read(self, thread_id: str, instance: int) -> None:
        thread = self.run(self.memories[instance].get_thread(thread_id))
        assert thread is not None
        floor = self.seen[instance].get(thread_id, 0)
        assert thread.version >= floor, f"served v{thread.version} after seeing v{floor}"
        assert [t.content for t in thread.turns] == self.committed[thread_id][: thread.version]
        self._note(instance, thread_id, thread.version)

    @rule(instance=st.sampled_from(INSTANCES))
    def deliver_invalidations(self, instance: int) -> None:
        """Wait until every write of the other instance has been announced to this one."""
        memory, other = self.memories[instance], self.memories[1 - instance]
        deadline = time.monotonic() + 10
        while memory.stats.invalidations_received < other.stats.invalidations_published:
            assert time.monotonic() < deadline, "an invalidation never arrived"
            self.run(asyncio.sleep(0.002))
        for thread_id, contents in self.committed.items():
            self._note(instance, thread_id, len(contents))

    @rule(instance=st.sampled_from(INSTANCES))
    def evict_l1(self, instance: int) -> None:
        self.memories[instance]._cache.l1.clear()

    @precondition(lambda self: bool(self.committed))
    @rule(thread_id=threads)
    def evict_l2(self, thread_id: str) -> None:
        self.redis.delete(f"{self.prefix}{{{thread_id}}}")

    @precondition(lambda self: bool(self.committed))
    @rule(thread_id=threads)
    def corrupt_l2(self, thread_id: str) -> None:
        self.redis.hset(f"{self.prefix}{{{thread_id}}}", "h", b"not json")

    @invariant()
    def no_store_errors(self) -> None:
        for memory in self.memories:
            assert memory.stats.store_errors == 0


CacheModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCacheModel = CacheModel.TestCase
