"""The inner flow h(·; θ): R^n → R^n with base density N(0, I_n), conditional on θ.

log p(u | θ) = log N(h(u; θ); 0, I_n) + log|det ∂h/∂u|, the chart log-likelihood of a point
with chart coordinates u (Brehmer & Cranmer 2020, eq. 5). θ enters as the context (the
embedded θ) of every coupling layer.
"""

from __future__ import annotations

import math

from nflows.transforms import CompositeTransform
from torch import Tensor

__all__ = ["InnerFlow", "standard_normal_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I): (B, k) -> (B,)."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * _LOG_2PI)


class InnerFlow(CompositeTransform):
    """h as a composition of nflows transforms (u → z order) with a standard normal base."""

    def log_prob(self, u: Tensor, context: Tensor | None = None) -> Tensor:
        """log N(h(u; θ)) + log|det ∂h/∂u|: u (B, n), context (B, c) -> (B,)."""
        z, logabsdet = self(u, context=context)
        return standard_normal_log_prob(z) + logabsdet

    def sample_from(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """u = h⁻¹(z; θ): z (B, n) -> (B, n); with z ~ N(0, I_n) a draw from p(u | θ)."""
        u, _ = self.inverse(z, context=context)
        return u
