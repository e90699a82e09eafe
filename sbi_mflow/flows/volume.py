"""Volume terms: from the chart log-likelihood to the estimator's density.

With u = e(x) and the chart log-likelihood log p(u | θ) of the inner flow:

* :class:`ManifoldVolume` (M-flow, Me-flow, FOM): the density of the projected point with
  respect to the manifold's volume,
  log p(x | θ) = log p(u | θ) − ½ log det(J_gᵀ J_g)(u),  J_g = ∂g/∂u ∈ R^{d×n}
  (Brehmer & Cranmer 2020, eq. 5), from one batched autograd pass;
* :class:`OffManifoldGaussian` (PIE): an ambient density on R^d,
  log p(x | θ) = log p(u | θ) + log N(v; 0, ε² I_{d−n}) + log|det ∂f/∂x|,  (u, v) = f(x)
  (ibid., eq. 3).

Neither term depends on θ when the chart does not, which is why likelihood ratios and
posteriors computed with the chart log-likelihood alone are exact for a fixed manifold.
"""

from __future__ import annotations

import math

from torch import Tensor

from sbi_mflow.flows.chart import ChartPart, ChartPoint

__all__ = ["ManifoldVolume", "OffManifoldGaussian", "VolumeTerm"]

_LOG_2PI = math.log(2.0 * math.pi)


class VolumeTerm:
    """log p(x | θ) − log p(u | θ) for a point with chart coordinates ``point``: (B,)."""

    #: whether the density lives on the manifold (then M/D training applies)
    on_manifold: bool = False

    def __call__(self, chart: ChartPart, x: Tensor, point: ChartPoint,
                 context: Tensor | None) -> Tensor:
        raise NotImplementedError


class ManifoldVolume(VolumeTerm):
    """−½ log det(J_gᵀ J_g)(u) of the chart's decoder g (see
    :meth:`~sbi_mflow.flows.chart.ChartPart.log_det_metric`)."""

    on_manifold = True

    def __call__(self, chart: ChartPart, x: Tensor, point: ChartPoint,
                 context: Tensor | None) -> Tensor:
        return -0.5 * chart.log_det_metric(point.u, context)


class OffManifoldGaussian(VolumeTerm):
    """log N(v; 0, ε² I) + log|det ∂f/∂x| with (u, v) = f(x): PIE's ambient density.

    Args:
        epsilon: ε, the width of the off-manifold Gaussian.
    """

    def __init__(self, epsilon: float) -> None:
        self.epsilon = float(epsilon)

    def __call__(self, chart: ChartPart, x: Tensor, point: ChartPoint,
                 context: Tensor | None) -> Tensor:
        if point.latent is None:
            point = chart.encode(x, context)
        v = point.latent[:, chart.manifold_dim :]
        eps = self.epsilon
        log_normal = -0.5 * (v / eps).pow(2).sum(-1) - v.shape[-1] * (
            math.log(eps) + 0.5 * _LOG_2PI)
        return log_normal + point.logabsdet
