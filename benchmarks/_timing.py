"""Small timing helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["best_time", "median_time"]


def _wall_times(function: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def best_time(function: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Best wall time in seconds over ``repeats`` calls (after ``warmup`` calls)."""
    return min(_wall_times(function, repeats, warmup))


def median_time(function: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time in seconds over ``repeats`` calls (after ``warmup`` calls)."""
    return statistics.median(_wall_times(function, repeats, warmup))
