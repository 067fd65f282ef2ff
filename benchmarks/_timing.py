"""Timing helper shared by our side and the reference side of the benchmarks (stdlib only).

``measure(fn)`` calls ``fn(i)`` in a ``time.perf_counter`` loop, sized so one repeat takes about
``repeat_seconds``, and returns the best per-call time in microseconds over ``repeats`` repeats:
the least disturbed run on a shared, noisy machine.
"""

import gc
import time
from typing import Callable


def measure(fn: Callable[[int], object], repeats: int = 5, repeat_seconds: float = 0.25, max_calls: int = 1_000_000) -> float:
    started = time.perf_counter()
    fn(0)
    once = max(time.perf_counter() - started, 1e-7)
    calls = int(min(max_calls, max(3, repeat_seconds / once)))
    best = float("inf")
    gc_was_enabled = gc.isenabled()
    try:
        for _ in range(repeats):
            gc.collect()
            gc.disable()
            started = time.perf_counter()
            for i in range(calls):
                fn(i)
            best = min(best, time.perf_counter() - started)
            if gc_was_enabled:
                gc.enable()
    finally:
        if gc_was_enabled:
            gc.enable()
    return best / calls * 1e6
