"""Two processes that take turns, as the two-process tests run them."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from typing import Any


async def run_two_sides(
    target: Callable[..., None], *args: Any, within: float = 240.0
) -> list[int | None]:
    """Run ``target(*args, side, pipe_end, start_barrier)`` in two spawned processes (sides
    0 and 1, joined by a pipe and a barrier) and return their exit codes. When one side
    fails, the other is stopped instead of being left waiting for it."""
    context = multiprocessing.get_context("spawn")
    left_end, right_end = context.Pipe()
    start = context.Barrier(2)
    sides = [
        context.Process(target=target, args=(*args, side, end, start))
        for side, end in ((0, left_end), (1, right_end))
    ]
    for process in sides:
        process.start()
    deadline = time.monotonic() + within
    while any(p.is_alive() for p in sides) and time.monotonic() < deadline:
        if any(p.exitcode not in (None, 0) for p in sides):
            break
        await asyncio.sleep(0.05)
    for process in sides:
        if process.is_alive():
            process.terminate()
        process.join(10)
    return [p.exitcode for p in sides]
