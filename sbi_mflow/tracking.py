"""A tracker that records nothing, for runs that should not write tensorboard logs.

sbi's trainers log to ``./sbi-logs`` by default; pass ``tracker=NullTracker()`` to
``ManifoldNLE`` (or sbi's ``NLE``) to keep the working directory clean.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NullTracker"]


class NullTracker:
    """Implements sbi's tracker interface and discards everything."""

    log_dir = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        del name, value, step

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        del metrics, step

    def log_params(self, params: dict[str, Any]) -> None:
        del params

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        del name, figure, step

    def flush(self) -> None:
        pass
