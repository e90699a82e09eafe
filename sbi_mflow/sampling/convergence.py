"""Convergence warnings for posterior chains: R̂, ESS, divergences, chains in different modes.

:func:`check_convergence` reads ArviZ data (arviz 0.2x ``InferenceData`` or arviz ≥ 1
``DataTree``) and warns (``ConvergenceWarning``) on

* rank-normalised split R̂ (Vehtari et al. 2021) above ``max_rhat`` (1.01);
* bulk ESS below ``min_ess`` (400 over all chains: the level at which R̂ and Monte-Carlo
  errors are reliable, Vehtari et al. 2021; 100 per chain for their 4 chains);
* divergent transitions (each chain's counted once);
* chains that disagree on where the posterior mass is (``ModeDisagreementWarning``): for
  some θ component the variance of the chain means exceeds ``max_between_within`` (1) ×
  the mean within-chain variance. Well-mixed chains have B/W ≈ 1/ESS_chain ≪ 1; chains
  sitting in different modes of a multimodal posterior (NUTS does not cross between
  separated modes) have B/W of the order of (mode distance / mode width)². R̂ then is
  large too (R̂² ≈ 1 + B/W for long chains), but the fix is different: more chains, not
  longer ones.

This module needs numpy and arviz only (no torch).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ConvergenceSummary",
    "ConvergenceWarning",
    "ModeDisagreementWarning",
    "between_within_ratio",
    "check_batch",
    "check_convergence",
    "check_draws",
    "summarize",
]


class ConvergenceWarning(UserWarning):
    """MCMC chains did not converge or mix well (R̂, ESS, divergences)."""


class ModeDisagreementWarning(ConvergenceWarning):
    """Chains sit in different regions (modes) of the posterior."""


@dataclass(frozen=True)
class ConvergenceSummary:
    max_rhat: float
    min_ess_bulk: float
    num_divergences: int
    num_chains: int
    num_draws: int
    between_within: float  # max over θ components of var(chain means) / mean within-var
    worst_component: int = 0  # the θ component of between_within


def between_within_ratio(draws: np.ndarray) -> np.ndarray:
    """var over chains of the chain means / mean within-chain variance, per component.

    ``draws``: (num_chains, num_draws, p) → (p,). NaN with fewer than 2 chains or draws.
    """
    draws = np.asarray(draws, dtype=float)
    if draws.ndim == 2:
        draws = draws[..., None]
    num_chains, num_draws = draws.shape[:2]
    if num_chains < 2 or num_draws < 2:
        return np.full(draws.shape[2:], np.nan).reshape(-1)
    between = draws.mean(axis=1).var(axis=0, ddof=1)
    within = draws.var(axis=1, ddof=1).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(within > 0, between / within, np.where(between > 0, np.inf, 0.0))
    return ratio.reshape(-1)


def summarize(draws: np.ndarray, diverging: np.ndarray | None = None) -> ConvergenceSummary:
    """R̂ (ArviZ's rank-normalised split R̂), bulk ESS (ArviZ), divergences and the
    between/within ratio of draws (num_chains, num_draws, p); ``diverging`` (num_chains,
    num_draws) bool. NaN R̂ with one chain; NaN R̂ and ESS below 4 draws per chain."""
    import arviz as az

    draws = np.asarray(draws, dtype=float)
    num_chains, num_draws = draws.shape[:2]
    dataset = az.convert_to_dataset({"theta": draws})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # too few draws: NaN estimates
        ess = float(np.min(az.ess(dataset, method="bulk")["theta"].values))
        rhat = float("nan")
        if num_chains > 1:
            rhat = float(np.max(az.rhat(dataset)["theta"].values))
    divergences = 0 if diverging is None else int(np.asarray(diverging).sum())
    ratio = between_within_ratio(draws.reshape(num_chains, num_draws, -1))
    worst = 0 if np.isnan(ratio).all() else int(np.nanargmax(ratio))
    return ConvergenceSummary(rhat, ess, divergences, num_chains, num_draws, float(ratio[worst]),
                              worst)


def check_convergence(
    idata,
    max_rhat: float = 1.01,
    min_ess: float = 400.0,
    max_between_within: float = 1.0,
    warn: bool = True,
    min_ess_per_chain: float | None = None,
) -> ConvergenceSummary:
    """R̂, bulk ESS, divergences and mode agreement of ``idata.posterior["theta"]`` (ArviZ
    data); see :func:`check_draws`."""
    theta = idata.posterior["theta"]
    stats = getattr(idata, "sample_stats", None)
    diverging = None
    if stats is not None and "diverging" in stats:
        diverging = np.asarray(stats["diverging"].values)
    names = list(theta.coords["theta_dim"].values) if "theta_dim" in theta.coords else []
    return check_draws(np.asarray(theta.values), diverging, names, max_rhat=max_rhat,
                       min_ess=min_ess, max_between_within=max_between_within, warn=warn,
                       min_ess_per_chain=min_ess_per_chain)


def check_draws(
    draws: np.ndarray,
    diverging: np.ndarray | None = None,
    names: list[str] | None = None,
    max_rhat: float = 1.01,
    min_ess: float = 400.0,
    max_between_within: float = 1.0,
    warn: bool = True,
    min_ess_per_chain: float | None = None,
) -> ConvergenceSummary:
    """:func:`summarize` draws (num_chains, num_draws, p) and warn on what fails.

    R̂ and the mode check need at least two chains; with fewer than 4 draws per chain
    neither R̂ nor ESS can be estimated, which is said instead. ``min_ess_per_chain``, if
    given, replaces ``min_ess`` by that many per chain.
    """
    summary = summarize(draws, diverging)
    if not warn:
        return summary
    num_chains, num_draws = summary.num_chains, summary.num_draws
    rhat, ess, between_within = summary.max_rhat, summary.min_ess_bulk, summary.between_within
    worst = summary.worst_component
    if num_draws < 4:
        warnings.warn(
            f"Only {num_draws} draws per chain: R-hat and ESS cannot be estimated.",
            ConvergenceWarning,
            stacklevel=3,
        )
    modes_disagree = num_draws >= 4 and between_within > max_between_within
    if modes_disagree:
        names = names or []
        label = names[worst] if worst < len(names) else f"theta[{worst}]"
        warnings.warn(
            f"The {num_chains} chains disagree on where the posterior mass is: for {label} "
            f"the variance of the chain means is {between_within:.3g}× the within-chain "
            f"variance (R-hat {rhat:.2f}). The posterior is probably multimodal: NUTS "
            "chains do not move between separated modes, so each mode's share of the draws "
            "is the share of chains that started in it (sampling-importance-resampling from "
            "the prior). Fix: raise num_chains (e.g. 40 or more) and num_init_candidates so "
            "the shares of chains per mode are stable, and look at the modes (per-chain "
            "means, az.plot_trace). If the posterior should be unimodal, the chains have "
            "not converged: raise warmup_steps.",
            ModeDisagreementWarning,
            stacklevel=3,
        )
    if num_chains > 1 and num_draws >= 4 and not modes_disagree and not rhat <= max_rhat:
        warnings.warn(
            f"R-hat = {rhat:.3f} > {max_rhat} for some θ component: the {num_chains} chains "
            "disagree; run longer warm-up / more draws.",
            ConvergenceWarning,
            stacklevel=3,
        )
    if min_ess_per_chain is not None:
        min_ess = min_ess_per_chain * num_chains
    if num_draws >= 4 and not ess >= min_ess:
        warnings.warn(
            f"Bulk ESS = {ess:.0f} < {min_ess:.0f}: posterior summaries are noisy; draw "
            "more samples.",
            ConvergenceWarning,
            stacklevel=3,
        )
    if summary.num_divergences:
        total = num_chains * num_draws
        warnings.warn(
            f"{summary.num_divergences} of {total} transitions diverged: the sampler may be "
            "biased in regions of high curvature; raise target_accept_prob or reparametrise.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return summary


def check_batch(
    draws: np.ndarray,
    diverging: np.ndarray | None = None,
    max_rhat: float = 1.01,
    warn: bool = True,
) -> list[ConvergenceSummary]:
    """:func:`summarize` each of B observations' chains, draws (B, C, N, p), diverging
    (B, C, N); one warning names the observations whose R̂ exceeds ``max_rhat`` or whose
    chains diverged."""
    summaries = [
        summarize(draws[b], None if diverging is None else diverging[b])
        for b in range(draws.shape[0])
    ]
    if not warn:
        return summaries
    bad_rhat = [b for b, s in enumerate(summaries)
                if s.num_chains > 1 and s.num_draws >= 4 and not s.max_rhat <= max_rhat]
    diverged = [b for b, s in enumerate(summaries) if s.num_divergences]
    if bad_rhat:
        worst = max(summaries[b].max_rhat for b in bad_rhat)
        warnings.warn(
            f"R-hat > {max_rhat} for {len(bad_rhat)} of {len(summaries)} observations "
            f"(worst {worst:.3f}; observations {_first(bad_rhat)}): their chains disagree; "
            "run longer warm-up / more draws, or sample those observations alone.",
            ConvergenceWarning,
            stacklevel=3,
        )
    if diverged:
        warnings.warn(
            f"Divergent transitions for {len(diverged)} of {len(summaries)} observations "
            f"({_first(diverged)}): the sampler may be biased there; raise "
            "target_accept_prob.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return summaries


def _first(indices: list[int], shown: int = 10) -> str:
    text = ", ".join(str(i) for i in indices[:shown])
    return text + (", …" if len(indices) > shown else "")
