"""M-flow, Me-flow and PIE as sbi conditional density estimators p(x | θ).

Notation (DESIGN.md): x ∈ R^d, θ ∈ R^p, manifold dimension n < d.

* outer flow f = body ∘ standardise : R^d → R^d, f(x) = (u, v), u ∈ R^n, v ∈ R^{d−n};
* chart (decoder) g(u) = f⁻¹(u, 0); encoder e(x) = u-part of f(x) (M-flow, PIE) or a
  separate network (Me-flow); projection x' = g(e(x));
* inner flow h(·; θ): R^n → R^n with base density N(0, I_n).

Densities:

* chart log-likelihood   log N(h(u; θ)) + log|det ∂h/∂u|,  u = e(x);
* M-flow / Me-flow exact  chart − ½ log det(J_gᵀ J_g)(u)   (w.r.t. the manifold's volume);
* PIE (ambient)           chart + log N(v; 0, ε² I) + log|det ∂f/∂x|.
"""

from __future__ import annotations

import math

import torch
from nflows.transforms import CompositeTransform, PointwiseAffineTransform
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from torch import Tensor, nn

from sbi_mflow.config import ManifoldFlowConfig
from sbi_mflow.jacobian import batched_jacobian, log_det_gram
from sbi_mflow.validation import check_finite, check_last_dim

__all__ = ["ManifoldFlowEstimator", "ManifoldFlowNet"]

_LOG_2PI = math.log(2.0 * math.pi)


def _standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * _LOG_2PI)


class ManifoldFlowNet(nn.Module):
    """Container of the trainable parts, so that sbi's ``self.net`` holds all of them.

    Attributes:
        standardize: x ↦ (x − mean)/std, the first layer of f.
        outer: the remaining layers of f (acts on standardised x).
        inner: the inner flow h on R^n.
        embedding: θ ↦ standardised θ (the context of h, and of f for PIE-conditional);
            None when unconditional.
        encoder: Me-flow's encoder network on standardised x, else None.
    """

    def __init__(
        self,
        standardize: PointwiseAffineTransform,
        outer: CompositeTransform,
        inner: CompositeTransform,
        embedding: nn.Module | None,
        encoder: nn.Module | None,
    ) -> None:
        super().__init__()
        self.standardize = standardize
        self.outer = outer
        self.inner = inner
        self.embedding = embedding
        self.encoder = encoder


class ManifoldFlowEstimator(ConditionalDensityEstimator):
    """Conditional likelihood estimator p(x | θ) supported on a learned n-manifold.

    Built by :func:`sbi_mflow.manifold_likelihood_nn`; follows sbi's shape conventions:
    ``log_prob(x (S,B,d) or (B,d), θ (B,p)) -> (S,B)``, ``sample(shape, θ (B,p)) ->
    (*shape, B, d)``, ``loss(x (B,d), θ (B,p)) -> (B,)``. With ``param_dim = 0`` the
    estimator is an unconditional density on a manifold and ``condition`` may be omitted.
    """

    def __init__(self, net: ManifoldFlowNet, config: ManifoldFlowConfig) -> None:
        condition_shape = torch.Size([config.param_dim])
        super().__init__(net, torch.Size([config.data_dim]), condition_shape)
        self.config = config

    # ------------------------------------------------------------------ basics
    @property
    def embedding_net(self) -> nn.Module | None:
        return self.net.embedding

    @property
    def data_dim(self) -> int:
        return self.config.data_dim

    @property
    def manifold_dim(self) -> int:
        return self.config.manifold_dim

    @property
    def param_dim(self) -> int:
        return self.config.param_dim

    @property
    def is_conditional(self) -> bool:
        return self.config.param_dim > 0

    @property
    def has_fixed_manifold(self) -> bool:
        """True when only the inner flow depends on θ (all models but 'pie-conditional')."""
        return not self.config.conditional_manifold

    def _check_x(self, x: Tensor, name: str = "x") -> None:
        check_last_dim(x, self.data_dim, name, min_dims=2)
        check_finite(x, name)

    def _require_condition(self, condition: Tensor | None) -> None:
        """θ must be given, with last dimension p and finite values."""
        if condition is None:
            raise ValueError(f"A condition θ of shape (batch, {self.param_dim}) is required.")
        check_last_dim(condition, self.param_dim, "condition (θ)", min_dims=2)
        check_finite(condition, "condition (θ)")

    def _check_condition(self, condition: Tensor | None, batch: int) -> Tensor | None:
        """Validate θ of shape (B, p); returns None for unconditional estimators."""
        if not self.is_conditional:
            if condition is not None and condition.numel() > 0:
                raise ValueError(
                    "This estimator is unconditional (param_dim = 0) but got a condition "
                    f"of shape {tuple(condition.shape)}."
                )
            return None
        self._require_condition(condition)
        if condition.shape[0] not in (1, batch):
            raise ValueError(
                f"condition (θ) has batch size {condition.shape[0]}, but x has {batch}; "
                "they must match or one of them must be 1."
            )
        return condition.expand(batch, self.param_dim)

    def _context(self, condition: Tensor | None) -> Tensor | None:
        if condition is None or self.net.embedding is None:
            return None
        return self.net.embedding(condition)

    def _outer_context(self, condition: Tensor | None) -> Tensor | None:
        return self._context(condition) if self.config.conditional_manifold else None

    # ----------------------------------------------------------- manifold maps
    def _outer_forward(self, x: Tensor, outer_context: Tensor | None) -> tuple[Tensor, Tensor]:
        """f(x) (B, d) and log|det ∂f/∂x| (B,)."""
        standardised, logdet_std = self.net.standardize(x)
        latent, logdet_body = self.net.outer(standardised, context=outer_context)
        return latent, logdet_std + logdet_body

    def _encode(self, x: Tensor, condition: Tensor | None) -> Tensor:
        if self.net.encoder is not None:
            standardised, _ = self.net.standardize(x)
            return self.net.encoder(standardised)
        latent, _ = self._outer_forward(x, self._outer_context(condition))
        return latent[:, : self.manifold_dim]

    def _decode(self, u: Tensor, outer_context: Tensor | None) -> Tensor:
        padded = torch.cat([u, u.new_zeros(u.shape[0], self.data_dim - self.manifold_dim)], -1)
        standardised, _ = self.net.outer.inverse(padded, context=outer_context)
        x, _ = self.net.standardize.inverse(standardised)
        return x

    def _manifold_condition(self, condition: Tensor | None, batch: int) -> Tensor | None:
        """θ is needed for the maps only when the manifold is conditional."""
        if self.config.conditional_manifold:
            return self._check_condition(condition, batch)
        return None

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Chart coordinates u = e(x): (B, d) -> (B, n). θ only for 'pie-conditional'."""
        self._check_x(x)
        return self._encode(x, self._manifold_condition(condition, x.shape[0]))

    def decode(self, u: Tensor, condition: Tensor | None = None) -> Tensor:
        """Points on the manifold g(u) = f⁻¹(u, 0): (B, n) -> (B, d)."""
        check_last_dim(u, self.manifold_dim, "u", min_dims=2)
        check_finite(u, "u")
        condition = self._manifold_condition(condition, u.shape[0])
        return self._decode(u, self._outer_context(condition))

    def project(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Projection onto the learned manifold x' = g(e(x)): (B, d) -> (B, d)."""
        self._check_x(x)
        condition = self._manifold_condition(condition, x.shape[0])
        return self._decode(self._encode(x, condition), self._outer_context(condition))

    def reconstruction_error(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """‖x − g(e(x))‖₂ in the user's units: (B, d) -> (B,)."""
        return (x - self.project(x, condition)).norm(dim=-1)

    # --------------------------------------------------------------- densities
    def latent_log_prob(self, u: Tensor, condition: Tensor | None = None) -> Tensor:
        """log N(h(u; θ)) + log|det ∂h/∂u|: u (B, n), θ (B, p) -> (B,).

        This is the chart log-likelihood given the encoding; the NUTS potential uses it
        with observations encoded once.
        """
        z, logdet = self.net.inner(u, context=self._context(condition))
        return _standard_normal_log_prob(z) + logdet

    def chart_log_prob(self, input: Tensor, condition: Tensor | None = None) -> Tensor:
        """Fixed-manifold (chart) log-likelihood, sbi shapes: (S,B,d)/(B,d), (B,p) -> (S,B).

        For models with a fixed manifold it differs from :meth:`log_prob` by a
        θ-independent term, so likelihood ratios and posteriors computed with it are exact.
        """
        x, condition, shape = self._flatten(input, condition)
        u = self._encode(x, condition if self.config.conditional_manifold else None)
        return self.latent_log_prob(u, condition).reshape(shape)

    def log_prob(self, input: Tensor, condition: Tensor | None = None, **kwargs) -> Tensor:
        """Exact log-likelihood, sbi shapes: (S,B,d)/(B,d), (B,p) -> (S,B).

        M-flow / Me-flow: density of the projected point w.r.t. the manifold's volume,
        chart − ½ log det(J_gᵀ J_g)(u). PIE: the ambient density
        chart + log N(v; 0, ε²) + log|det ∂f/∂x|.
        """
        x, condition, shape = self._flatten(input, condition)
        if self.config.model in ("pie", "pie-conditional"):
            value = self._pie_log_prob(x, condition)
        else:
            value = self._mflow_log_prob(x, condition)
        return value.reshape(shape)

    def _pie_log_prob(self, x: Tensor, condition: Tensor | None) -> Tensor:
        latent, logdet_outer = self._outer_forward(x, self._outer_context(condition))
        u, v = latent[:, : self.manifold_dim], latent[:, self.manifold_dim :]
        eps = self.config.epsilon
        log_normal_v = (
            -0.5 * (v / eps).pow(2).sum(-1) - v.shape[-1] * (math.log(eps) + 0.5 * _LOG_2PI)
        )
        return self.latent_log_prob(u, condition) + log_normal_v + logdet_outer

    def _mflow_log_prob(self, x: Tensor, condition: Tensor | None) -> Tensor:
        u = self._encode(x, None)
        return self.latent_log_prob(u, condition) - 0.5 * self.log_det_metric(u)

    def log_det_metric(
        self, u: Tensor, condition: Tensor | None = None, mode: str = "auto"
    ) -> Tensor:
        """log det(J_gᵀ J_g)(u), J_g = ∂g/∂u ∈ R^{d×n}: (B, n) -> (B,).

        Exact, from one batched forward- or reverse-mode pass (see
        :func:`sbi_mflow.jacobian.batched_jacobian`). Works under sbi's ``no_grad``; the
        result carries a graph only when the caller has grad enabled.
        """
        jacobian = batched_jacobian(
            self._decode,
            u,
            self._outer_context(condition),
            data_dim=self.data_dim,
            mode=mode,
            create_graph=torch.is_grad_enabled(),
        )
        return log_det_gram(jacobian)

    def _flatten(
        self, input: Tensor, condition: Tensor | None
    ) -> tuple[Tensor, Tensor | None, torch.Size]:
        """Check and align sbi-shaped inputs; returns x (S·B, d), θ (S·B, p), shape (S, B)."""
        self._check_x(input, "input (x)")
        if input.dim() > 3:
            raise ValueError(
                f"input (x) must have shape (batch, {self.data_dim}) or "
                f"(sample, batch, {self.data_dim}), got {tuple(input.shape)}."
            )
        if not self.is_conditional:
            self._check_condition(condition, 1)
            x = input if input.dim() == 3 else input.unsqueeze(0)
            return x.reshape(-1, self.data_dim), None, x.shape[:2]
        self._require_condition(condition)
        x, condition, _ = self._broadcast_and_align(input, condition)
        shape = x.shape[:2]
        return x.reshape(-1, self.data_dim), condition.reshape(-1, self.param_dim), shape

    # ---------------------------------------------------------------- sampling
    def sample(
        self, sample_shape: torch.Size | tuple[int, ...], condition: Tensor | None = None,
        **kwargs,
    ) -> Tensor:
        """Points on the learned manifold: θ (B, p) -> (*sample_shape, B, d).

        Unconditional estimators take ``condition=None`` and return (*sample_shape, d).
        """
        sample_shape = torch.Size(sample_shape)
        num = sample_shape.numel()
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        if self.is_conditional:
            self._require_condition(condition)
            batch = condition.shape[0]
            repeated = condition.unsqueeze(0).expand(num, batch, self.param_dim)
            repeated = repeated.reshape(num * batch, self.param_dim)
            out_shape = (*sample_shape, batch, self.data_dim)
        else:
            self._check_condition(condition, 1)
            batch, repeated = 1, None
            out_shape = (*sample_shape, self.data_dim)
        z = torch.randn(num * batch, self.manifold_dim, device=device, dtype=dtype)
        u, _ = self.net.inner.inverse(z, context=self._context(repeated))
        x = self._decode(u, self._outer_context(repeated))
        return x.reshape(out_shape)

    # -------------------------------------------------------------------- loss
    def loss(self, input: Tensor, condition: Tensor | None = None, **kwargs) -> Tensor:
        """Per-sample simultaneous loss (B,) for plain ``sbi.inference.NLE`` training.

        M-flow / Me-flow: w · mean_j (x̃_j − x̃'_j)² (x̃ standardised x, x' the projection)
        + chart NLL with the encoding detached for the inner flow. PIE: −log_prob.
        """
        if self.config.model in ("pie", "pie-conditional"):
            return -self.log_prob(input.unsqueeze(0), condition)[0]
        return self.reconstruction_loss(input, condition) + self.density_loss(input, condition)

    def reconstruction_loss(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """w · mean over coordinates of the squared standardised reconstruction error (B,)."""
        cond = condition if self.config.conditional_manifold else None
        outer_context = self._outer_context(cond)
        projected = self._decode(self._encode(x, cond), outer_context)
        target, _ = self.net.standardize(x)
        predicted, _ = self.net.standardize(projected)
        return self.config.reconstruction_weight * (target - predicted).pow(2).mean(-1)

    def density_loss(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Chart NLL −log p(u | θ) with u = e(x) held fixed (no gradient to f or e): (B,)."""
        cond = condition if self.config.conditional_manifold else None
        u = self._encode(x, cond).detach()
        return -self.latent_log_prob(u, condition if self.is_conditional else None)
