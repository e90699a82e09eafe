"""Chain starts by sampling-importance-resampling (SIR) from the prior.

M prior draws θ_m get importance weights w_m ∝ p(x_o | θ_m) (the posterior over the prior,
which is the proposal), and C starts are resampled from them by *sorted systematic*
resampling: the candidates are ordered along the principal axis of the weighted cloud
(the direction in which the posterior's mass is most spread, which separates its modes),
and one uniform u ~ U[0, 1/C) picks the points u + k/C, k < C, on their cumulative
normalised weights (Kitagawa 1996; Douc & Cappé 2005). Each candidate is chosen ⌊C w_m⌋
or ⌈C w_m⌉ times, and so is every run of consecutive candidates: a mode that holds the
fraction a of the importance mass and occupies a stretch of the ordering receives C·a
chains up to ±1, where independent (multinomial) draws would add a binomial error
√(C a (1 − a)) (±2.2 chains of 20 for two equal modes).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["importance_ess", "principal_axis_order", "systematic_resample"]


def importance_ess(log_weights: Tensor) -> float:
    """Kish's effective sample size (Σ w)² / Σ w² of unnormalised ``log_weights``.

    It sets the precision of the importance estimate of a mode's mass a: its standard
    error is about √(a (1 − a) / ESS), 0.016 for ESS = 1000 and a = ½.
    """
    log_weights = log_weights.detach().to(torch.float64)
    log_weights = log_weights[torch.isfinite(log_weights)]
    if log_weights.numel() == 0:
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(log_weights, 0)
                           - torch.logsumexp(2 * log_weights, 0)))


def principal_axis_order(points: Tensor, weights: Tensor) -> Tensor:
    """Permutation (M,) sorting ``points`` (M, p) along the leading eigenvector of their
    ``weights``-weighted covariance."""
    points = points.detach().to(torch.float64).cpu()
    weights = weights.detach().to(torch.float64).cpu()
    weights = weights / weights.sum()
    mean = (weights[:, None] * points).sum(0)
    centred = points - mean
    covariance = (weights[:, None] * centred).T @ centred
    _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    return torch.argsort(centred @ vectors[:, -1])


def systematic_resample(log_weights: Tensor, num: int, points: Tensor | None = None) -> Tensor:
    """Indices (num,) drawn by systematic resampling from unnormalised ``log_weights`` (M,),
    along :func:`principal_axis_order` of ``points`` (M, p) when given, else in index order.

    Non-finite log-weights count as zero weight. Uses torch's global RNG.

    Raises:
        RuntimeError: all weights are zero.
    """
    log_weights = log_weights.detach().to(torch.float64).cpu()
    finite = torch.isfinite(log_weights)
    if not bool(finite.any()):
        raise RuntimeError("All importance weights are zero (the log-weights are -inf or NaN).")
    weights = torch.zeros_like(log_weights)
    weights[finite] = torch.exp(log_weights[finite] - log_weights[finite].max())
    order = torch.arange(len(weights)) if points is None else principal_axis_order(points, weights)
    cumulative = torch.cumsum(weights[order] / weights.sum(), 0)
    cumulative[-1] = 1.0  # guard the last bin against rounding
    positions = (torch.rand((), dtype=torch.float64) + torch.arange(num, dtype=torch.float64))
    chosen = torch.searchsorted(cumulative, positions / num, right=True)
    return order[chosen.clamp(max=len(weights) - 1)]
