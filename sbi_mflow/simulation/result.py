"""Simulations as returned by :func:`sbi_mflow.simulate` and :func:`sbi_mflow.load_simulations`."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["SimulationResult"]


@dataclass(repr=False)
class SimulationResult:
    """θ (N, p), x (N, d), the joint score t (N, p) or None, and ``failed`` (N,) bool.

    A row has ``failed`` set when its chunk raised after all retries (x is NaN there), when
    the simulator returned NaN/inf in its x or score, or, for a store still being written,
    when its chunk has not finished yet. ``metadata`` holds the store's plain metadata (for
    the command line: the simulator's name); ``chunk_errors`` the last exception of each
    failed chunk.
    """

    theta: Tensor
    x: Tensor
    score: Tensor | None
    failed: Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    chunk_errors: dict[str, str] = field(default_factory=dict)

    @property
    def num_failed(self) -> int:
        return int(self.failed.sum())

    def valid_simulations(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """(θ, x, score-or-None) of the rows that did not fail."""
        keep = ~self.failed
        score = None if self.score is None else self.score[keep]
        return self.theta[keep], self.x[keep], score

    def append_to(self, inference: Any, exclude_invalid_x: bool = False) -> Any:
        """``inference.append_simulations`` with the valid rows; returns ``inference``.

        Works with :class:`sbi_mflow.ManifoldNLE` (scores are passed when present) and with
        sbi's own trainers (which take no score). With ``exclude_invalid_x=True`` all rows
        are passed and the trainer drops the invalid ones itself (and says how many).
        """
        if exclude_invalid_x:
            theta, x, score = self.theta, self.x, self.score
        else:
            theta, x, score = self.valid_simulations()
            if len(theta) == 0:
                raise ValueError(f"All {len(self.theta)} simulations failed; nothing to append.")
        kwargs: dict[str, Any] = {"exclude_invalid_x": exclude_invalid_x}
        if score is not None and "score" in inspect.signature(
                inference.append_simulations).parameters:
            kwargs["score"] = score
        return inference.append_simulations(theta, x, **kwargs)

    def __repr__(self) -> str:
        score = "with" if self.score is not None else "without"
        return (f"SimulationResult({len(self.theta)} rows, θ dim {self.theta.shape[1]}, "
                f"x dim {self.x.shape[1]}, {score} score, {self.num_failed} failed)")
