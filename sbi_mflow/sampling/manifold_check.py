"""Warn when observations lie far off the learned manifold.

:func:`check_on_manifold`: the likelihood of an off-manifold x_o is that of its projection
g(e(x_o)). A trial is flagged when its reconstruction error ‖x − g(e(x))‖₂ exceeds the
larger of a statistical threshold and a rounding floor.

The statistical threshold is

- ``factor`` (3) × the 99% quantile of reference errors, when reference errors are known:
  from ``reference_x`` (e.g. held-out training data), an explicit ``reference_errors``
  tensor, or an estimator attribute ``reference_reconstruction_error`` (a float, the 99%
  quantile on training data, if a trainer stored one);
- otherwise ``relative_tolerance`` (0.05) × ‖σ_x‖₂, with σ_x the per-coordinate standard
  deviation of the training data held by the estimator's x-standardisation: an error of 5%
  of the data's overall spread.

The rounding floor (:func:`rounding_floor`) is ``ROUNDING_FACTOR`` · ε · S, with ε the
machine epsilon of the estimator's dtype and S = ‖|μ_x| + σ_x‖₂ the data's scale (μ_x, σ_x:
the per-coordinate mean and standard deviation of the x-standardisation). The projection of
a point that lies exactly on the learned manifold differs from it by rounding alone: each
of the chart's layers rounds its output (relative error ε on coordinates of size up to
|μ_x| + σ_x), and the round trip f⁻¹(P f(x)) amplifies those errors by the chart's local
condition number. When the reference data lie exactly on the manifold (a simulator
without noise, a prescribed chart), their errors are that rounding noise, and a quantile
of them would flag other rounding noise as "far off"; the floor prevents it.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from sbi_mflow.estimator import ManifoldFlowEstimator

__all__ = ["OffManifoldWarning", "check_on_manifold", "manifold_threshold", "rounding_floor"]

REFERENCE_QUANTILE = 0.99

#: Rounding floor in units of ε · S. Round trips of exact-manifold points measured at most
#: 162 ε·S on trained charts (PolynomialSurface, ConditionalSphere; float32 and float64)
#: and 29 ε·S on the tests' perturbed charts: 2^11 leaves a margin of 12× over the worst.
#: In float32 the floor is 2.4e-4 · S, so a displacement of 1e-3 of the data's spread
#: still warns unless the data's offset |μ_x| is several times their spread.
ROUNDING_FACTOR = 2048.0


class OffManifoldWarning(UserWarning):
    """Observations lie far off the learned manifold."""


def rounding_floor(estimator: ManifoldFlowEstimator) -> float:
    """``ROUNDING_FACTOR`` · ε · ‖|μ_x| + σ_x‖₂: reconstruction errors rounding can produce.

    ε is the machine epsilon of the estimator's parameters' dtype; μ_x and σ_x are the
    x-standardisation's per-coordinate mean and standard deviation (see the module
    docstring for the arithmetic).
    """
    dtype = next(estimator.parameters()).dtype
    standardize = estimator.chart.standardize
    mean = standardize.mean.detach().to(torch.float64).expand(estimator.data_dim)
    std = standardize.std.detach().to(torch.float64).expand(estimator.data_dim)
    scale = float((mean.abs() + std).norm())
    return ROUNDING_FACTOR * torch.finfo(dtype).eps * scale


def _statistical_threshold(
    estimator: ManifoldFlowEstimator,
    reference_x: Tensor | None,
    reference_errors: Tensor | None,
    factor: float,
    relative_tolerance: float,
) -> tuple[float, str]:
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


def manifold_threshold(
    estimator: ManifoldFlowEstimator,
    reference_x: Tensor | None = None,
    reference_errors: Tensor | None = None,
    factor: float = 3.0,
    relative_tolerance: float = 0.05,
) -> tuple[float, str]:
    """Reconstruction-error threshold above which x is "far off" the manifold, and its origin.

    The larger of the statistical threshold and :func:`rounding_floor` (module docstring).
    """
    threshold, origin = _statistical_threshold(
        estimator, reference_x, reference_errors, factor, relative_tolerance
    )
    floor = rounding_floor(estimator)
    if floor > threshold:
        dtype = next(estimator.parameters()).dtype
        return floor, (
            f"rounding floor {ROUNDING_FACTOR:g} × ε({str(dtype).removeprefix('torch.')}) × "
            f"data scale ‖|μ_x| + σ_x‖₂, above {origin}"
        )
    return threshold, origin


def check_on_manifold(
    estimator: ManifoldFlowEstimator,
    x_o: Tensor,
    reference_x: Tensor | None = None,
    reference_errors: Tensor | None = None,
    factor: float = 3.0,
    relative_tolerance: float = 0.05,
    warn: bool = True,
    threshold: tuple[float, str] | None = None,
) -> Tensor:
    """Reconstruction errors of x_o (T, d) → (T,); warns (``OffManifoldWarning``) above
    the threshold.

    See the module docstring for how the threshold is chosen; ``threshold`` (value, origin),
    from :func:`manifold_threshold`, skips choosing it again.
    """
    if threshold is None:
        threshold = manifold_threshold(
            estimator, reference_x, reference_errors, factor, relative_tolerance
        )
    threshold, origin = threshold
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
