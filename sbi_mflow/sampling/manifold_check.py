"""Warn when observations lie far off the learned manifold.

:func:`check_on_manifold`: the likelihood of an off-manifold x_o is that of its projection
g(e(x_o)). A trial is flagged when its reconstruction error ‖x − g(e(x))‖₂ exceeds

- ``factor`` (3) × the 99% quantile of reference errors, when reference errors are known:
  from ``reference_x`` (e.g. held-out training data), an explicit ``reference_errors``
  tensor, or an estimator attribute ``reference_reconstruction_error`` (a float, the 99%
  quantile on training data, if a trainer stored one);
- otherwise ``relative_tolerance`` (0.05) × ‖σ_x‖₂, with σ_x the per-coordinate standard
  deviation of the training data held by the estimator's x-standardisation: an error of 5%
  of the data's overall spread.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from sbi_mflow.estimator import ManifoldFlowEstimator

__all__ = ["OffManifoldWarning", "check_on_manifold", "manifold_threshold"]

REFERENCE_QUANTILE = 0.99


class OffManifoldWarning(UserWarning):
    """Observations lie far off the learned manifold."""


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
