"""``estimate_manifold_dim``: the dimension n of the manifold the data lie on, if any.

Two stages (Brehmer & Cranmer 2020, section 3: "If the manifold dimension n is not known a
priori, it can be determined through cross-validation based on the reconstruction error"):

1. a fast intrinsic-dimension estimate m̂ (:mod:`sbi_mflow.dimension.fast`, seconds);
2. short manifold phases of an M-flow chart for candidate n, starting at round(m̂) and
   walking as :mod:`sbi_mflow.dimension.selection` asks, each scored by its held-out
   reconstruction error (:mod:`sbi_mflow.dimension.cross_validation`); the smallest n at the
   curve's noise floor is chosen, or none when the floor is never reached (full-rank data).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from sbi_mflow.dimension.cross_validation import ChartScore, score_dimension
from sbi_mflow.dimension.fast import FAST_METHOD, fast_dimension, prepare_rows
from sbi_mflow.dimension.result import ManifoldDimEstimate
from sbi_mflow.dimension.selection import (
    DimensionSearchConfig,
    choose,
    next_candidate,
    start_candidate,
)
from sbi_mflow.training.config import TrainConfig

__all__ = ["estimate_manifold_dim"]

_MIN_ROWS = 40
#: Singular values of the standardised rows below this fraction of the largest count as zero:
#: float32 data that are exact linear functions of each other leave ~1e-7 of relative
#: rounding; a direction of 1e-5 relative spread is far below what a chart resolves.
_RANK_TOLERANCE = 1e-5


def _linear_dim(rows: np.ndarray) -> int:
    """Dimension of the affine span of the (standardised) rows: copied or linearly dependent
    coordinates do not count, and any chart of at least this dimension is exact."""
    singular = np.linalg.svd(rows - rows.mean(0), compute_uv=False)
    return int((singular > _RANK_TOLERANCE * singular[0]).sum())


def _as_rows(x: Tensor | np.ndarray) -> np.ndarray:
    rows = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(
        x, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"x must be a (num_samples, data_dim) array, got shape {rows.shape}.")
    if not np.isfinite(rows).all():
        bad = int((~np.isfinite(rows)).any(axis=1).sum())
        raise ValueError(f"x has {bad} rows with NaN or infinite values; drop or fix them.")
    return rows


def estimate_manifold_dim(
    x: Tensor | np.ndarray,
    config: DimensionSearchConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    show_progress_bars: bool = True,
) -> ManifoldDimEstimate:
    """Estimate the dimension n of the manifold that simulated data ``x`` (N, d) lie on.

    Constant coordinates are set aside (they are reported); repeated rows are counted once;
    d is the dimension of the data's linear span (copied or linearly dependent coordinates
    do not count), so "no manifold below d" means below that. Returns a
    :class:`ManifoldDimEstimate` with the chosen n (None: no manifold below d), the reason,
    the per-n held-out errors and ``.plot()``.

    Example:
        >>> result = estimate_manifold_dim(x)        # x: (10_000, 32) simulations
        >>> print(result)                            # the curve and the choice
        >>> build = manifold_likelihood_nn("mflow", result.manifold_dim)
    """
    config = config or DimensionSearchConfig()
    started = time.perf_counter()
    rows = _as_rows(x)
    varying = rows.std(0) > 0
    constant = tuple(int(i) for i in np.flatnonzero(~varying))
    if not varying.any():
        raise ValueError("Every coordinate of x is constant: there is nothing to estimate.")
    prepared = prepare_rows(rows, config.max_rows, seed)
    if prepared.shape[0] < _MIN_ROWS:
        raise ValueError(f"x has {prepared.shape[0]} distinct rows; estimating a manifold's "
                         f"dimension needs at least {_MIN_ROWS} (better 10^3 or more).")
    data_dim = _linear_dim(prepared)
    fast_started = time.perf_counter()
    fast = fast_dimension(prepared) if data_dim > 1 else 1.0
    fast_seconds = time.perf_counter() - fast_started

    scores: dict[int, ChartScore] = {}
    if data_dim > 1:
        values = torch.as_tensor(prepared, dtype=torch.float32)
        permutation = torch.randperm(len(values), generator=torch.Generator().manual_seed(seed))
        split = int(round(len(values) * (1 - config.validation_fraction)))
        train, validation = permutation[:split], permutation[split:]
        epochs = config.epochs(len(train), TrainConfig().resolved(torch.device(device))
                               .training_batch_size)
        candidate: int | None = start_candidate(fast, data_dim)
        with tqdm(total=0, desc="manifold dimension", disable=not show_progress_bars) as bar:
            while candidate is not None:
                bar.total += epochs
                bar.set_postfix_str(f"n={candidate}")
                scores[candidate] = score_dimension(
                    values, train, validation, candidate, epochs, torch.device(device),
                    seed=seed, progress=bar.update)
                errors = {n: s.reconstruction for n, s in scores.items()}
                candidate = next_candidate(errors, data_dim, fast, config)
        linear = {n: s.linear for n, s in scores.items()}
        chosen, confirmed, reason = choose(errors, linear, data_dim, fast, config)
    else:
        chosen, confirmed = None, False
        reason = "the data vary along a single line: no manifold below d = 1"
    return ManifoldDimEstimate(
        manifold_dim=chosen, confirmed=confirmed, reason=reason, data_dim=data_dim,
        constant_coordinates=constant, fast_estimate=fast, fast_method=FAST_METHOD,
        scores=tuple(scores[n] for n in sorted(scores)),
        max_unexplained=config.max_unexplained, num_rows=int(prepared.shape[0]),
        seconds=time.perf_counter() - started, fast_seconds=fast_seconds)
