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

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "SIRStarts",
    "importance_ess",
    "principal_axis_order",
    "sir_starts",
    "systematic_resample",
]

#: Rows (observations × θ's × trials) per potential call when screening candidates.
SCREENING_ROWS = 2**16
#: Most rows (observations × candidates × trials) screened while seeking ``target_ess``.
SCREENING_BUDGET = 2**22


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


@dataclass
class SIRStarts:
    """Chain starts of B observations and how they were found.

    Attributes:
        z: starts in the unconstrained space, (B, C, p), float64.
        num_candidates: prior draws screened (the same draws for every observation).
        ess: importance ESS of the candidates' weights, per observation (B,).
    """

    z: Tensor
    num_candidates: int
    ess: Tensor


def _log_posteriors(potential, theta: Tensor) -> Tensor:
    """log π(θ) + log-likelihood of candidates θ (M, p) for every observation: (B, M)."""
    num_obs, num_trials = potential.x_batch.shape[:2]
    chunk = max(1, SCREENING_ROWS // (num_obs * num_trials))
    with torch.no_grad():
        return torch.cat([
            potential.batched(part.unsqueeze(0).expand(num_obs, -1, -1), track_gradients=False)
            for part in theta.split(chunk)
        ], dim=1).detach()


def sir_starts(potential, prior, transform, num_chains: int, num_candidates: int,
               target_ess: float = 0.0) -> SIRStarts:
    """Chain starts for each of the potential's B observations by sorted systematic SIR.

    Prior draws weighted by their likelihood (importance weights for the prior as
    proposal, computed with ``potential.batched``): ``num_candidates`` of them, then as many
    again, doubling, while the smallest ESS over the observations is below ``target_ess``,
    up to 100 × ``num_candidates`` candidates and :data:`SCREENING_BUDGET` rows. Each
    observation's C starts are resampled from the shared candidates with its own weights.

    Raises:
        RuntimeError: for some observation the potential is −inf or NaN at every candidate.
    """
    num_obs, num_trials = potential.x_batch.shape[:2]
    budget = SCREENING_BUDGET // (num_obs * num_trials)
    limit = max(num_candidates, min(100 * num_candidates, budget))
    candidates, log_weights, batch = [], [], num_candidates
    while True:
        draws = prior.sample((batch,))
        candidates.append(draws)
        log_weights.append(_log_posteriors(potential, draws) - prior.log_prob(draws).to(
            potential.device))
        total = sum(len(c) for c in candidates)
        joined = torch.cat(log_weights, dim=1)
        ess = torch.tensor([importance_ess(row) for row in joined])
        if float(ess.min()) >= target_ess or total >= limit:
            break
        batch = min(total, limit - total)
    candidates = torch.cat(candidates)
    z = transform(candidates).to(torch.float64)
    joined[:, ~torch.isfinite(z).all(-1)] = -math.inf  # on the support's boundary
    dead = ~torch.isfinite(joined).any(-1)
    if bool(dead.any()):
        raise RuntimeError(
            f"The potential is -inf or NaN at all {total} prior draws for observation(s) "
            f"{dead.nonzero().flatten().tolist()}: their likelihood is zero everywhere; "
            "check x and the estimator."
        )
    starts = torch.stack([
        z[systematic_resample(row, num_chains, points=candidates).to(z.device)]
        for row in joined
    ])
    return SIRStarts(z=starts.detach(), num_candidates=int(total), ess=ess)
