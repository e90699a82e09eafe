"""The inner flow h(·; θ): R^n → R^n with base density N(0, I_n), conditional on θ.

log p(u | θ) = log N(h(u; θ); 0, I_n) + log|det ∂h/∂u|, the chart log-likelihood of a point
with chart coordinates u (Brehmer & Cranmer 2020, eq. 5). θ enters as the context (the
embedded θ) of every coupling layer.

When the chart's coordinates are not of order one (a prescribed chart g* may have any
scale), h starts with an affine standardisation s(u) = (u − m) / σ from the training data,
h = h' ∘ s, and its log|det| −Σ_j log σ_j is part of log|det ∂h/∂u|: the splines (identity
outside [−B, B]) then see standardised coordinates and the density stays in the chart's
units.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from nflows.transforms import CompositeTransform, Transform
from torch import Tensor, nn

from sbi_mflow.flows.chart import Standardization

__all__ = ["InnerFlow", "standard_normal_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I): (B, k) -> (B,)."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * _LOG_2PI)


class InnerFlow(CompositeTransform):
    """h as a composition of nflows transforms (u → z order) with a standard normal base.

    Args:
        recipe: ``recipe() -> list of transforms`` with fresh random weights on every call
            (e.g. a ``functools.partial`` of
            :func:`~sbi_mflow.flows.stack.build_spline_stack`); :meth:`reinitialize` calls
            it again.
        standardize: an affine standardisation of u applied first (see the module
            docstring), or None.
    """

    def __init__(self, recipe: Callable[[], list[Transform]],
                 standardize: Standardization | None = None) -> None:
        super().__init__(recipe())
        self.recipe = recipe
        self.standardize = standardize

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z = h(u; θ) (B, n) and log|det ∂h/∂u| (B,)."""
        if self.standardize is None:
            return super().forward(inputs, context)
        standardised, logdet = self.standardize(inputs)
        z, logdet_flow = super().forward(standardised, context)
        return z, logdet + logdet_flow

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """u = h⁻¹(z; θ) (B, n) and log|det ∂h⁻¹/∂z| (B,)."""
        u, logdet = super().inverse(inputs, context)
        if self.standardize is None:
            return u, logdet
        u, logdet_standardize = self.standardize.inverse(u)
        return u, logdet + logdet_standardize

    def reinitialize(self) -> None:
        """Fresh weights and permutations (the standardisation, from data, stays)."""
        self._transforms.load_state_dict(nn.ModuleList(self.recipe()).state_dict())

    def log_prob(self, u: Tensor, context: Tensor | None = None) -> Tensor:
        """log N(h(u; θ)) + log|det ∂h/∂u|: u (B, n), context (B, c) -> (B,)."""
        z, logabsdet = self(u, context=context)
        return standard_normal_log_prob(z) + logabsdet

    def sample_from(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """u = h⁻¹(z; θ): z (B, n) -> (B, n); with z ~ N(0, I_n) a draw from p(u | θ)."""
        u, _ = self.inverse(z, context=context)
        return u
