"""Small timing helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["best_time"]


def best_time(function: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Best wall time in seconds over ``repeats`` calls (after ``warmup`` calls)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)
