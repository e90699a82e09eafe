"""Chain starts by sampling-importance-resampling (SIR) from the prior.

M prior draws θ_m get importance weights w_m ∝ p(x_o | θ_m) (the posterior over the prior,
which is the proposal), and C starts are resampled from them by *ordered systematic*
resampling: the candidates are put in the leaf order of a single-linkage dendrogram of the
weighted cloud (:func:`cluster_order`), in which every cluster, at every level of the
tree, is one stretch of consecutive candidates, and one uniform u ~ U[0, 1/C) picks the points
u + k/C, k < C, on their cumulative normalised weights (Kitagawa 1996; Douc & Cappé 2005).
Each candidate is chosen ⌊C w_m⌋ or ⌈C w_m⌉ times, and so is every run of consecutive
candidates: a mode that holds the fraction a of the importance mass, and so forms one
stretch of the ordering, receives ⌊C a⌋ or ⌈C a⌉ chains, where independent (multinomial)
draws would add a binomial error √(C a (1 − a)) (±2.2 chains of 20 for two equal modes).
A single sort along the principal axis does this for modes on one line only: modes that
differ along several axes (SLCP's four sign modes) interleave on any one axis.

When the posterior is so much narrower than the prior that the weights' ESS stays below
the target (lifted SLCP with 20 trials: ESS ≈ 1 of 4·10⁴ draws, so every chain starts at
one draw, in one mode), the starts are resampled from the tempered weights w_m^β instead,
with β < 1 the largest exponent whose ESS reaches the target: the first step of adaptive
tempering (Jasra, Stephens, Doucet & Tsagaris 2011). The chains then start in the
tempered posterior π(θ) p(x_o | θ)^β and warm-up takes them to the modes whose basins they
start in. Modes that are images of one another (a symmetry of the likelihood) keep their
true shares; otherwise a mode's share is its tempered one, h_k^β (|Σ_k| / β^p)^{1/2} for a
Gaussian mode of height h_k and covariance Σ_k, against h_k |Σ_k|^{1/2}: lower, wider
modes gain chains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.cluster.hierarchy import leaves_list, linkage
from torch import Tensor

__all__ = [
    "SIRStarts",
    "cluster_order",
    "importance_ess",
    "sir_starts",
    "systematic_resample",
    "tempering_exponent",
]

#: Rows (observations × θ's × trials) per potential call when screening candidates.
SCREENING_ROWS = 2**16
#: Most rows (observations × candidates × trials) screened while seeking ``target_ess``.
SCREENING_BUDGET = 2**22
#: Anchors drawn ∝ weight whose dendrogram orders the candidates (memory O(K²)).
ORDERING_ANCHORS = 1000
#: Candidates per distance computation when assigning them to anchors.
_ASSIGN_ROWS = 4096


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


def tempering_exponent(log_weights: Tensor, target_ess: float, iterations: int = 50) -> float:
    """The largest β ∈ (0, 1] with ``importance_ess(β · log_weights) ≥ target_ess``, by
    bisection (ESS falls as β grows); 1 when the untempered weights reach it. The target is
    capped at half the finite weights, which β → 0 (equal weights) exceeds."""
    log_weights = log_weights.detach().to(torch.float64)
    log_weights = log_weights[torch.isfinite(log_weights)]
    target = min(target_ess, 0.5 * log_weights.numel())
    if importance_ess(log_weights) >= target:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if importance_ess(middle * log_weights) >= target:
            low = middle
        else:
            high = middle
    return max(low, 2.0**-iterations)


def cluster_order(points: Tensor, weights: Tensor) -> Tensor:
    """Permutation (M,) of ``points`` (M, p) in which each separated mode of the ``weights``
    (M,) is one stretch.

    K = :data:`ORDERING_ANCHORS` draws (with replacement, ∝ weight; the distinct ones are
    the anchors) are put in the leaf order of their single-linkage dendrogram (the minimum
    spanning tree's; scipy's ``linkage`` and ``leaves_list``), in coordinates scaled by the
    weighted standard deviation per axis. Each candidate of nonzero weight takes its
    nearest anchor's place; zero-weight candidates, which resampling never picks, go last.
    A mode whose anchors are joined by steps shorter than its distance to any other mode's
    anchors is a subtree, however elongated, and a subtree is a run of consecutive leaves.
    (Ward's linkage, which prefers compact clusters, cuts elongated modes in halves and
    pairs the halves across modes.) Uses torch's global RNG.
    """
    points = points.detach().to(torch.float64).cpu()
    weights = weights.detach().to(torch.float64).cpu()
    weights = weights / weights.sum()
    mean = (weights[:, None] * points).sum(0)
    scale = (weights[:, None] * (points - mean) ** 2).sum(0).sqrt()
    scaled = (points - mean) / torch.where(scale > 0, scale, torch.ones_like(scale))
    anchors = torch.multinomial(weights, ORDERING_ANCHORS, replacement=True).unique()
    if len(anchors) == 1:
        return torch.argsort(weights == 0, stable=True)
    leaves = torch.as_tensor(leaves_list(linkage(scaled[anchors].numpy(), method="single")),
                             dtype=torch.long)
    rank = torch.empty_like(leaves)
    rank[leaves] = torch.arange(len(leaves))  # anchor i sits at position rank[i]
    position = torch.full((len(points),), len(anchors), dtype=torch.long)
    live = (weights > 0).nonzero().flatten()
    for part in live.split(_ASSIGN_ROWS):
        nearest = torch.cdist(scaled[part], scaled[anchors]).argmin(-1)
        position[part] = rank[nearest]
    return torch.argsort(position, stable=True)


def systematic_resample(log_weights: Tensor, num: int, points: Tensor | None = None) -> Tensor:
    """Indices (num,) drawn by systematic resampling from unnormalised ``log_weights`` (M,),
    along :func:`cluster_order` of ``points`` (M, p) when given, else in index order.

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
    order = torch.arange(len(weights)) if points is None else cluster_order(points, weights)
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
        ess: importance ESS of the candidates' (untempered) weights, per observation (B,).
        beta: tempering exponent of the weights the starts were resampled from (B,);
            1 where ``ess`` reached the target.
    """

    z: Tensor
    num_candidates: int
    ess: Tensor
    beta: Tensor


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
    """Chain starts for each of the potential's B observations by ordered systematic SIR.

    Prior draws weighted by their likelihood (importance weights for the prior as
    proposal, computed with ``potential.batched``): ``num_candidates`` of them, then as many
    again, doubling, while the smallest ESS over the observations is below ``target_ess``,
    up to 100 × ``num_candidates`` candidates and :data:`SCREENING_BUDGET` rows. Each
    observation's C starts are resampled from the shared candidates with its own weights,
    tempered by :func:`tempering_exponent` where their ESS stays below ``target_ess``.

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
    beta = torch.tensor([tempering_exponent(row, target_ess) for row in joined],
                        dtype=torch.float64)
    starts = torch.stack([
        z[systematic_resample(exponent * row, num_chains, points=candidates).to(z.device)]
        for exponent, row in zip(beta.tolist(), joined, strict=True)
    ])
    return SIRStarts(z=starts.detach(), num_candidates=int(total), ess=ess, beta=beta)
