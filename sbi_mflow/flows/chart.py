"""Charts: the map between chart coordinates u ∈ R^n and the manifold in R^d.

A chart part (:class:`ChartPart`) encodes x to u, decodes u to a point on its manifold and
gives the volume term log det(J_gᵀ J_g)(u). Two kinds:

* :class:`Chart` (learned; M-flow, Me-flow, PIE): the outer flow
  f = body ∘ alignment ∘ standardise : R^d → R^d, a bijection with f(x) = (u, v),
  u ∈ R^n, v ∈ R^{d−n} (standardisation is its first, affine layer, so densities are in
  the user's units). The decoder is g(u) = f⁻¹(u, 0), the learned manifold is its image,
  and x' = g(u(x)) projects x onto it (Brehmer & Cranmer 2020, section 2);
* :class:`~sbi_mflow.flows.prescribed.ExactChart` (FOM): a chart g* given by the user.

References:
    Brehmer, Cranmer. Flows for simultaneous manifold learning and density estimation.
    NeurIPS 2020.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from nflows.transforms import CompositeTransform, Transform
from torch import Tensor, nn

from sbi_mflow.jacobian import batched_jacobian, log_det_gram

__all__ = ["Chart", "ChartPart", "ChartPoint", "Standardization"]


class Standardization(Transform):
    """x ↦ (x − mean) / std, log|det| = −Σ_j log std_j (the first layer of f).

    Statistics come from a batch of training data; near-constant coordinates (exactly
    manifold-supported data can have them) get their std floored at 1e-3 times the median
    std instead of sbi's 1e-14, which would blow up.
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @classmethod
    def from_data(cls, x: Tensor | None, features: int) -> Standardization:
        """Statistics of the finite rows of ``x`` (N, d); the identity without data."""
        if x is None:
            return cls(torch.zeros(features), torch.ones(features))
        finite = x[torch.isfinite(x).all(dim=1)].detach().to("cpu", torch.float64)
        if finite.shape[0] < 2:
            raise ValueError("Need at least two finite rows of x to standardise the data.")
        std = finite.std(0)
        std = std.clamp_min(max(float(std.median()) * 1e-3, 1e-8))
        return cls(finite.mean(0).float(), std.float())

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logabsdet = -torch.log(self.std).sum().expand(inputs.shape[0])
        return (inputs - self.mean) / self.std, logabsdet

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logabsdet = torch.log(self.std).sum().expand(inputs.shape[0])
        return inputs * self.std + self.mean, logabsdet


@dataclass
class ChartPoint:
    """x in chart coordinates: u (B, n); with the full f(x) (B, d) and log|det ∂f/∂x| (B,)
    when they were computed on the way (M-flow and PIE encoders), else None."""

    u: Tensor
    latent: Tensor | None = None
    logabsdet: Tensor | None = None


class ChartPart(nn.Module):
    """What the estimator needs of a chart (the learned :class:`Chart` or a prescribed one).

    Attributes:
        standardize: x ↦ (x − mean) / std from the training data: the units of the
            reconstruction error and of the off-manifold check.
        manifold_dim: n.
        conditional: whether the chart depends on θ (the estimator then passes the
            embedded θ as ``context``).
        trainable: whether the chart has parameters to learn (the manifold phase).
    """

    standardize: Standardization
    manifold_dim: int
    conditional: bool = False
    trainable: bool = True

    @property
    def data_dim(self) -> int:
        return self.standardize.mean.numel()

    def encode(self, x: Tensor, context: Tensor | None = None) -> ChartPoint:
        """u = e(x) (B, n) for x (B, d)."""
        raise NotImplementedError

    def decode(self, u: Tensor, context: Tensor | None = None) -> Tensor:
        """g(u): (B, n) -> (B, d), a point on the manifold."""
        raise NotImplementedError

    def reinitialize(self) -> None:
        """Draw fresh initial weights (and permutations) with the part's own recipe."""

    def latent_standardization(self, x: Tensor | None) -> Standardization | None:
        """The inner flow's affine standardisation of u = e(x), from training data ``x``
        (identity statistics without data), or None when u is already of order one (a
        learned chart on standardised x)."""
        return None

    def log_det_metric(self, u: Tensor, context: Tensor | None = None,
                       mode: str = "auto") -> Tensor:
        """log det(J_gᵀ J_g)(u), J_g = ∂g/∂u ∈ R^{d×n}: (B, n) -> (B,).

        Exact, from one batched forward- or reverse-mode pass through :meth:`decode`
        (:func:`sbi_mflow.jacobian.batched_jacobian`, ``mode`` "auto", "forward" or
        "reverse"); differentiable when grad is enabled (also under sbi's ``no_grad``
        the value is computed, without a graph).
        """
        jacobian = batched_jacobian(self.decode, u, context, data_dim=self.data_dim, mode=mode,
                                    create_graph=torch.is_grad_enabled())
        return log_det_gram(jacobian)

    def standardized(self, x: Tensor) -> Tensor:
        """(x − mean) / std, the units of the reconstruction loss."""
        return self.standardize(x)[0]


class Chart(ChartPart):
    """Outer flow f = body ∘ alignment ∘ standardise with the projection onto its first n
    outputs.

    Args:
        standardize: x ↦ (x − mean) / std, f's first layer.
        body_recipe: ``body_recipe() -> list of nflows transforms``, the trainable layers of
            f (data → latent order) with fresh random weights on every call (e.g. a
            ``functools.partial`` of :func:`~sbi_mflow.flows.stack.build_chart_body`);
            :meth:`reinitialize` calls it again.
        manifold_dim: n.
        conditional: whether f depends on θ (the original PIE's conditional manifold); the
            estimator then passes the embedded θ as ``context``.
        alignment: a fixed rotation of standardised x onto the data's tangent directions
            (:mod:`sbi_mflow.flows.alignment`), or None.
    """

    def __init__(self, standardize: Standardization,
                 body_recipe: Callable[[], list[Transform]], manifold_dim: int,
                 conditional: bool = False, alignment: Transform | None = None) -> None:
        super().__init__()
        self.standardize = standardize
        self.alignment = alignment
        self.body = CompositeTransform(body_recipe())
        self.body_recipe = body_recipe
        self.manifold_dim = manifold_dim
        self.conditional = conditional

    def reinitialize(self) -> None:
        """Fresh weights and permutations for the body (standardisation and alignment,
        which come from the data, stay)."""
        self.body.load_state_dict(CompositeTransform(self.body_recipe()).state_dict())

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """f(x) (B, d) and log|det ∂f/∂x| (B,)."""
        standardised, logdet_standardize = self.standardize(x)
        if self.alignment is not None:
            standardised, _ = self.alignment(standardised)  # orthogonal: log|det| = 0
        latent, logdet_body = self.body(standardised, context=context)
        return latent, logdet_standardize + logdet_body

    def encode(self, x: Tensor, context: Tensor | None = None) -> ChartPoint:
        """u = the first n components of f(x), keeping f(x) and its log-determinant."""
        latent, logabsdet = self(x, context)
        return ChartPoint(latent[:, : self.manifold_dim], latent, logabsdet)

    def decode(self, u: Tensor, context: Tensor | None = None) -> Tensor:
        """g(u) = f⁻¹(u, 0): (B, n) -> (B, d)."""
        padded = nn.functional.pad(u, (0, self.data_dim - self.manifold_dim))
        standardised, _ = self.body.inverse(padded, context=context)
        if self.alignment is not None:
            standardised, _ = self.alignment.inverse(standardised)
        x, _ = self.standardize.inverse(standardised)
        return x
