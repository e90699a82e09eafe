"""Warnings that keep posterior sampling honest: convergence and off-manifold observations.

* :func:`check_convergence`: rank-normalised split R̂ (Vehtari et al. 2021) above
  ``max_rhat`` (1.01), bulk ESS below ``min_ess_per_chain`` (100) × num_chains, or any
  divergent transition → one ``ConvergenceWarning`` each.
* :func:`check_on_manifold`: the likelihood of an off-manifold x_o is that of its projection
  g(e(x_o)). A trial is flagged when its reconstruction error ‖x − g(e(x))‖₂ exceeds

  - ``factor`` (3) × the 99% quantile of reference errors, when reference errors are
    known: from ``reference_x`` (e.g. held-out training data), an explicit
    ``reference_errors`` tensor, or an estimator attribute
    ``reference_reconstruction_error`` (a float, the 99% quantile on training data, if a
    trainer stored one);
  - otherwise ``relative_tolerance`` (0.05) × ‖σ_x‖₂, with σ_x the per-coordinate standard
    deviation of the training data held by the estimator's x-standardisation: an error of
    5% of the data's overall spread.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sbi_mflow.estimator import ManifoldFlowEstimator

__all__ = [
    "ConvergenceWarning",
    "OffManifoldWarning",
    "check_convergence",
    "check_on_manifold",
    "manifold_threshold",
]

REFERENCE_QUANTILE = 0.99


class ConvergenceWarning(UserWarning):
    """MCMC chains did not converge or mix well (R̂, ESS, divergences)."""


class OffManifoldWarning(UserWarning):
    """Observations lie far off the learned manifold."""


@dataclass
class ConvergenceSummary:
    max_rhat: float
    min_ess_bulk: float
    num_divergences: int
    num_chains: int
    num_draws: int


def check_convergence(
    idata,
    max_rhat: float = 1.01,
    min_ess_per_chain: float = 100.0,
    warn: bool = True,
) -> ConvergenceSummary:
    """R̂, bulk ESS and divergences of ``idata.posterior["theta"]``; warns when poor.

    R̂ needs at least two chains; with one chain only ESS and divergences are checked. With
    fewer than 4 draws per chain neither R̂ nor ESS can be estimated, which is said instead.
    """
    import arviz as az

    theta = idata.posterior["theta"]
    num_chains, num_draws = int(theta.sizes["chain"]), int(theta.sizes["draw"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # too few draws: NaN estimates
        ess_values = az.ess(idata, var_names=["theta"], method="bulk")["theta"].values
        ess = float(np.min(ess_values))
        rhat = float("nan")
        if num_chains > 1:
            rhat = float(np.max(az.rhat(idata, var_names=["theta"])["theta"].values))
    divergences = 0
    if hasattr(idata, "sample_stats") and "diverging" in idata.sample_stats:
        divergences = int(idata.sample_stats["diverging"].values.sum())
    summary = ConvergenceSummary(rhat, ess, divergences, num_chains, num_draws)
    if not warn:
        return summary
    if num_draws < 4:
        warnings.warn(
            f"Only {num_draws} draws per chain: R-hat and ESS cannot be estimated.",
            ConvergenceWarning,
            stacklevel=2,
        )
    if num_chains > 1 and num_draws >= 4 and not rhat <= max_rhat:
        warnings.warn(
            f"R-hat = {rhat:.3f} > {max_rhat} for some θ component: the {num_chains} chains "
            "disagree; run longer warm-up / more draws or check for multimodality.",
            ConvergenceWarning,
            stacklevel=2,
        )
    min_ess = min_ess_per_chain * num_chains
    if num_draws >= 4 and not ess >= min_ess:
        warnings.warn(
            f"Bulk ESS = {ess:.0f} < {min_ess:.0f} ({min_ess_per_chain:.0f} per chain): "
            "posterior summaries are noisy; draw more samples.",
            ConvergenceWarning,
            stacklevel=2,
        )
    if divergences:
        total = num_chains * num_draws
        warnings.warn(
            f"{divergences} of {total} transitions diverged: the sampler may be biased in "
            "regions of high curvature; raise target_accept_prob or reparametrise.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return summary


def manifold_threshold(
    estimator: ManifoldFlowEstimator,
    reference_x: Tensor | None = None,
    reference_errors: Tensor | None = None,
    factor: float = 3.0,
    relative_tolerance: float = 0.05,
) -> tuple[float, str]:
    """Reconstruction-error threshold above which x is "far off" the manifold, and its origin."""
    if reference_errors is None and reference_x is not None:
        with torch.no_grad():
            reference_errors = estimator.reconstruction_error(
                reference_x.to(next(estimator.parameters()))
            )
    if reference_errors is not None:
        errors = torch.as_tensor(reference_errors, dtype=torch.float64).flatten()
        errors = errors[torch.isfinite(errors)]
        if errors.numel() == 0:
            raise ValueError("reference reconstruction errors are empty or all non-finite.")
        quantile = float(torch.quantile(errors, REFERENCE_QUANTILE))
        return factor * quantile, f"{factor} × 99% quantile of reference errors ({quantile:.3g})"
    stored = getattr(estimator, "reference_reconstruction_error", None)
    if stored is not None:
        return factor * float(stored), f"{factor} × stored training 99% quantile ({stored:.3g})"
    std = estimator.chart.standardize.std.detach().to(torch.float64)
    spread = float(std.expand(estimator.data_dim).norm())
    return relative_tolerance * spread, (
        f"{relative_tolerance} × data spread ‖σ_x‖₂ = {spread:.3g} (no reference errors given)"
    )


def check_on_manifold(
    estimator: ManifoldFlowEstimator,
    x_o: Tensor,
    reference_x: Tensor | None = None,
    reference_errors: Tensor | None = None,
    factor: float = 3.0,
    relative_tolerance: float = 0.05,
    warn: bool = True,
) -> Tensor:
    """Reconstruction errors of x_o (T,) ; warns (``OffManifoldWarning``) above the threshold.

    See the module docstring for how the threshold is chosen.
    """
    threshold, origin = manifold_threshold(
        estimator, reference_x, reference_errors, factor, relative_tolerance
    )
    with torch.no_grad():
        errors = estimator.reconstruction_error(x_o).detach()
    far = errors > threshold
    if warn and bool(far.any()):
        warnings.warn(
            f"{int(far.sum())} of {errors.numel()} observations lie far off the learned "
            f"manifold (max reconstruction error {float(errors.max()):.3g} > threshold "
            f"{threshold:.3g} = {origin}); the likelihood used is that of their projection "
            "onto the manifold.",
            OffManifoldWarning,
            stacklevel=2,
        )
    return errors
