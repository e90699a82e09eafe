"""Getting the manifold right: candidate initialisations and a stall check.

An M-flow is only as good as its learned manifold. Before 0.2.0.dev1 the manifold phase
stalled at a large reconstruction error on about one seed in three: the coupling stack
could leave a coordinate (nearly) untransformed (fixed in :mod:`sbi_mflow.flows.stack`).
Two remedies remain, measured in docs/results.md:

* :func:`select_candidate` (default 3 candidates): ``k`` freshly initialised charts are
  trained for a few epochs each and the one with the lowest validation reconstruction
  error is kept and trained on (its optimiser state included);
* restarts (``manifold_retries``, default 0): when :func:`check_manifold` fails, the
  schedules start the manifold phase again from fresh weights and keep the better attempt.

:func:`check_manifold` always runs: after the manifold phase the held-out reconstruction
error is compared with that of the best n-dimensional *linear* chart (PCA) of the same
data, and a :class:`ManifoldStallWarning` names the numbers and the fixes when the learned
chart is not clearly better (a stalled phase, or one that has not converged yet).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.training.data import TrainingData
from sbi_mflow.training.phase import EpochResult, Phase
from sbi_mflow.training.stopping import state_copy

__all__ = ["ManifoldCheck", "ManifoldStallWarning", "check_manifold", "linear_baseline",
           "select_candidate", "warn_stall"]

#: The learned chart counts as stalled when its held-out error exceeds this fraction of the
#: linear (PCA) chart's: trained charts reach 0.2–1.4 %, stalled ones 30–90 % on the
#: polynomial surface (4000 simulations, 10 seeds).
STALL_RATIO = 0.05
#: Errors below this (mean squared, per standardised coordinate: an RMS of 1 % of a
#: standard deviation) are never called a stall, whatever the linear chart achieves.
STALL_FLOOR = 1e-4


class ManifoldStallWarning(UserWarning):
    """The learned manifold reconstructs held-out data hardly better than a linear fit."""


@dataclass
class ManifoldCheck:
    """Held-out reconstruction of the learned chart against the best linear chart.

    Attributes:
        reconstruction: mean squared standardised reconstruction error per coordinate of
            the validation data, (1/d) E‖x̃ − x̃'‖².
        linear_baseline: the same for the projection onto the top-n principal components of
            the standardised training data.
        ratio: reconstruction / linear_baseline.
        stalled: whether the check fails (see :data:`STALL_RATIO`, :data:`STALL_FLOOR`).
    """

    reconstruction: float
    linear_baseline: float
    ratio: float
    stalled: bool

    def to_dict(self) -> dict:
        return asdict(self)


def linear_baseline(train: Tensor, validation: Tensor, manifold_dim: int) -> float:
    """(1/d) E‖x̃ − P x̃‖² on ``validation`` for the rank-n PCA projection P of ``train``
    (both standardised, (N, d))."""
    train, validation = train.double(), validation.double()
    mean = train.mean(0)
    _, _, vh = torch.linalg.svd(train - mean, full_matrices=False)
    basis = vh[:manifold_dim]  # (n, d)
    centred = validation - mean
    residual = centred - (centred @ basis.T) @ basis
    return float(residual.pow(2).mean())


def _standardized(estimator: ManifoldFlowEstimator, x: Tensor) -> Tensor:
    return estimator.chart.standardized(x)


@torch.no_grad()
def check_manifold(estimator: ManifoldFlowEstimator, data: TrainingData,
                   max_rows: int = 20_000, warn: bool = True) -> ManifoldCheck:
    """Compare the chart's held-out reconstruction with the linear chart's; warn on a stall."""
    estimator.eval()
    train = _standardized(estimator, data.x[data.train_indices[:max_rows]])
    val_x = data.x[data.val_indices[:max_rows]]
    val_theta = data.theta[data.val_indices[:max_rows]]
    projected = torch.cat([
        estimator.project_unchecked(x, theta)
        for x, theta in zip(val_x.split(4096), val_theta.split(4096), strict=True)
    ])
    error = float((_standardized(estimator, val_x) - _standardized(estimator, projected))
                  .pow(2).mean())
    baseline = linear_baseline(train, _standardized(estimator, val_x), estimator.manifold_dim)
    ratio = error / baseline if baseline > 0 else float("inf")
    check = ManifoldCheck(error, baseline, ratio, error > STALL_FLOOR and ratio > STALL_RATIO)
    if check.stalled and warn:
        warn_stall(check, estimator.manifold_dim)
    return check


def warn_stall(check: ManifoldCheck, manifold_dim: int, attempts: int = 1) -> None:
    """The :class:`ManifoldStallWarning` of a failed check, with its numbers and the fixes."""
    tried = f" after {attempts} attempts from fresh initial weights" if attempts > 1 else ""
    warnings.warn(
        f"The learned manifold reconstructs held-out data with a mean squared error of "
        f"{check.reconstruction:.3g} per standardised coordinate, {100 * check.ratio:.0f}% "
        f"of what the best linear {manifold_dim}-dimensional chart leaves "
        f"({check.linear_baseline:.3g}){tried}: the manifold phase has stalled or not converged "
        "yet. Try more manifold epochs (max_num_epochs), more simulations, more outer "
        "layers, restarts from fresh weights (manifold_retries, manifold_candidates), or "
        "check that manifold_dim is not smaller than the data's.",
        ManifoldStallWarning, stacklevel=5,
    )


def select_candidate(
    estimator: ManifoldFlowEstimator,
    make_phase: Callable[[], Phase],
    reinitialize: Callable[[], None],
    candidates: int,
    probe_epochs: int,
    run_epochs: Callable[[Phase, int], list[EpochResult]],
) -> Phase:
    """Train ``candidates`` initialisations for ``probe_epochs`` each; keep the best.

    ``make_phase()`` builds a fresh manifold phase (its own optimiser) on the estimator's
    parameters; ``reinitialize()`` draws new initial weights for the chart and encoder;
    ``run_epochs(phase, epochs)`` trains. Returns the winning phase, with the estimator
    holding the winner's weights, ready to continue.
    """
    best: tuple[float, dict[str, Tensor], Phase] | None = None
    for candidate in range(candidates):
        if candidate > 0:
            reinitialize()
        phase = make_phase()
        results = run_epochs(phase, probe_epochs)
        loss = min(r.validation_loss for r in results) if results else float("inf")
        if best is None or loss < best[0]:
            best = (loss, state_copy(estimator), phase)
    _, state, phase = best
    estimator.load_state_dict(state)
    return phase
