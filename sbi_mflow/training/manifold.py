"""Getting the manifold right: candidate initialisations and a stall check.

An M-flow is only as good as its learned manifold. Before 0.2.0.dev1 the manifold phase
stalled at a large reconstruction error on about one seed in three: the coupling stack
could leave a coordinate (nearly) untransformed (fixed in :mod:`sbi_mflow.flows.stack`).
Two remedies remain (their measurements: ``benchmarks/manifold_stall.py``):

* :func:`select_candidate` (default 3 candidates): ``k`` freshly initialised charts are
  trained for a few epochs each and the one with the lowest validation reconstruction
  error is kept and trained on (its optimiser state included);
* restarts (``manifold_retries``, default 0): when :func:`check_manifold` fails, the
  schedules start the manifold phase again from fresh weights and keep the better attempt.

:func:`check_manifold` always runs: after the manifold phase the held-out reconstruction
error is compared with that of the best n-dimensional *linear* chart (PCA) of the same
data. When the learned chart is not clearly better, the data's intrinsic dimension is
estimated (:func:`sbi_mflow.dimension.fast.fast_dimension`, a second at most) to tell the two
causes apart: above n, the data lie on no n-dimensional manifold and a
:class:`NoManifoldWarning` says so (a larger n or an ambient flow is the fix; retries are
skipped); otherwise a :class:`ManifoldStallWarning` names the numbers and the training fixes
(a stalled phase, or one that has not converged yet).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.sampling.manifold_check import REFERENCE_QUANTILE
from sbi_mflow.training.data import TrainingData
from sbi_mflow.training.phase import EpochResult, Phase
from sbi_mflow.training.stopping import state_copy

__all__ = ["ManifoldCheck", "ManifoldStallWarning", "NoManifoldWarning", "check_manifold",
           "linear_baseline", "select_candidate", "warn_check"]

#: The learned chart counts as stalled when its held-out error exceeds this fraction of the
#: linear (PCA) chart's: trained charts reach 0.2–1.4 %, stalled ones 30–90 % on the
#: polynomial surface (4000 simulations, 10 seeds).
STALL_RATIO = 0.05
#: Errors below this (mean squared, per standardised coordinate: an RMS of 1 % of a
#: standard deviation) are never called a stall, whatever the linear chart achieves.
STALL_FLOOR = 1e-4
#: A failed check is blamed on the data when their estimated intrinsic dimension exceeds n
#: by more than this. Skdim's MLE read 2.0–2.3 on the package's n = 2 simulators and
#: 9.8–10.2 on its n = 10 ones, with and without 1 % noise; 9.5 on full-rank data in R¹⁰
#: (benchmarks/manifold_dim.py).
NO_MANIFOLD_MARGIN = 0.5
#: Rows of the training data the intrinsic-dimension estimate uses.
DIMENSION_ROWS = 5000


class ManifoldStallWarning(UserWarning):
    """The learned manifold reconstructs held-out data hardly better than a linear fit."""


class NoManifoldWarning(UserWarning):
    """The training data lie on no manifold of the chosen dimension n (their intrinsic
    dimension is larger: full-rank data, or too small an n)."""


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
        data_dimension: the intrinsic-dimension estimate of the training data, made only
            when the check fails (None otherwise).
        no_manifold: the check failed and data_dimension > n + :data:`NO_MANIFOLD_MARGIN`.
        error_quantile: the 99% quantile of the held-out reconstruction errors
            ‖x − g(e(x))‖₂ in data units: the posterior's off-manifold threshold is a
            multiple of it (:mod:`sbi_mflow.sampling.manifold_check`).
    """

    reconstruction: float
    linear_baseline: float
    ratio: float
    stalled: bool
    data_dimension: float | None = None
    no_manifold: bool = False
    error_quantile: float | None = None

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
                   max_rows: int = 20_000, warn: bool = True,
                   diagnose: bool = True) -> ManifoldCheck:
    """Compare the chart's held-out reconstruction with the linear chart's; warn on a stall.

    ``diagnose``: estimate the data's intrinsic dimension when the check fails (to tell a
    stall from data on no n-manifold); off where only the two errors are wanted.
    """
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
    distances = (val_x - projected).double().norm(dim=1)
    distances = distances[torch.isfinite(distances)]
    quantile = float(torch.quantile(distances, REFERENCE_QUANTILE)) if len(distances) else None
    baseline = linear_baseline(train, _standardized(estimator, val_x), estimator.manifold_dim)
    ratio = error / baseline if baseline > 0 else float("inf")
    stalled = error > STALL_FLOOR and ratio > STALL_RATIO
    dimension = _data_dimension(train[:DIMENSION_ROWS]) if stalled and diagnose else None
    check = ManifoldCheck(error, baseline, ratio, stalled, dimension,
                          dimension is not None
                          and dimension > estimator.manifold_dim + NO_MANIFOLD_MARGIN,
                          quantile)
    if check.stalled and warn:
        warn_check(check, estimator.manifold_dim)
    return check


def _data_dimension(rows: Tensor) -> float | None:
    """skdim's MLE of the intrinsic dimension of ``rows`` (None with too few distinct rows)."""
    from sbi_mflow.dimension.fast import fast_dimension, prepare_rows

    prepared = prepare_rows(rows.detach().cpu().double().numpy(), DIMENSION_ROWS, seed=0)
    if prepared.shape[0] < 40 or prepared.shape[1] < 2:
        return None
    return fast_dimension(prepared)


def warn_check(check: ManifoldCheck, manifold_dim: int, attempts: int = 1) -> None:
    """The warning of a failed check: :class:`NoManifoldWarning` when the data's intrinsic
    dimension is above n, else :class:`ManifoldStallWarning`; with the numbers and fixes."""
    if check.no_manifold:
        warnings.warn(
            f"The training data lie on no {manifold_dim}-dimensional manifold: their intrinsic "
            f"dimension is estimated at {check.data_dimension:.1f}, and the learned chart leaves "
            f"a held-out mean squared error of {check.reconstruction:.3g} per standardised "
            f"coordinate off its manifold, {100 * check.ratio:.0f}% of what the best linear "
            f"{manifold_dim}-dimensional chart leaves ({check.linear_baseline:.3g}). More "
            "training will not fix this. Use a larger manifold_dim "
            "(sbi_mflow.estimate_manifold_dim(x) measures it), or, for full-rank data, an "
            "ambient flow such as sbi's likelihood_nn('nsf').",
            NoManifoldWarning, stacklevel=5,
        )
        return
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
