"""Manifold-learning flows (M-flow, Me-flow, PIE, FOM) as sbi density estimators p(x | θ).

Notation (DESIGN.md): x ∈ R^d, θ ∈ R^p, manifold dimension n < d. An estimator is composed
of parts (built from a :class:`~sbi_mflow.models.ModelSpec` by :mod:`sbi_mflow.builders`):

* the chart (:mod:`sbi_mflow.flows.chart`): a learned outer flow f = body ∘ standardise,
  f(x) = (u, v), decoder g(u) = f⁻¹(u, 0); or a prescribed chart g*
  (:mod:`sbi_mflow.flows.prescribed`);
* the encoder u = e(x): the chart's own inverse (M-flow, PIE, FOM) or a network (Me-flow)
  (:mod:`sbi_mflow.flows.encoder`);
* the inner flow h(·; θ) on R^n with base N(0, I_n) (:class:`~sbi_mflow.flows.inner.InnerFlow`);
* the volume term (:mod:`sbi_mflow.flows.volume`): −½ log det(J_gᵀ J_g) (density on the
  manifold) or PIE's log N(v; 0, ε²) + log|det ∂f/∂x|.

The loss of plain sbi training follows from the parts (:func:`sbi_mflow.losses.training_loss`).

Densities: the chart log-likelihood log N(h(u; θ)) + log|det ∂h/∂u| with u = e(x), and the
exact log-likelihood = chart log-likelihood + volume term.

References:
    Brehmer, Cranmer. Flows for simultaneous manifold learning and density estimation.
    NeurIPS 2020.
"""

from __future__ import annotations

import torch
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from torch import Tensor, nn

from sbi_mflow.config import ManifoldFlowConfig
from sbi_mflow.flows.chart import ChartPart, ChartPoint
from sbi_mflow.flows.inner import InnerFlow
from sbi_mflow.flows.volume import VolumeTerm
from sbi_mflow.losses import training_loss
from sbi_mflow.models import ModelSpec
from sbi_mflow.validation import check_finite, check_last_dim

__all__ = ["ManifoldFlowEstimator", "ManifoldFlowNet"]


class ManifoldFlowNet(nn.Module):
    """The trainable parts, so that sbi's ``self.net`` holds all of them.

    Attributes:
        chart: the chart (a learned outer flow with the projection, or a prescribed one).
        encoder: u = e(x) (the chart's inverse, or Me-flow's network).
        inner: the inner flow h on R^n.
        embedding: θ ↦ context of h (and of f for a conditional manifold); None when
            unconditional.
    """

    def __init__(self, chart: ChartPart, encoder: nn.Module, inner: InnerFlow,
                 embedding: nn.Module | None) -> None:
        super().__init__()
        self.chart = chart
        self.encoder = encoder
        self.inner = inner
        self.embedding = embedding

    def reinitialize(self, manifold: bool = True, inner: bool = False) -> None:
        """Fresh initial weights (and permutations) of the chart and encoder, and of the
        inner flow if asked, each drawn by the part itself; data-derived standardisations
        and alignments stay."""
        if manifold:
            self.chart.reinitialize()
            self.encoder.reinitialize()
        if inner:
            self.inner.reinitialize()


class ManifoldFlowEstimator(ConditionalDensityEstimator):
    """Conditional likelihood estimator p(x | θ) supported on a learned n-manifold.

    Follows sbi's shape conventions: ``log_prob(x (S,B,d) or (B,d), θ (B,p)) -> (S,B)``,
    ``sample(shape, θ (B,p)) -> (*shape, B, d)``, ``loss(x (B,d), θ (B,p)) -> (B,)``. With
    ``param_dim = 0`` the estimator is an unconditional density on a manifold and
    ``condition`` may be omitted.
    """

    def __init__(self, net: ManifoldFlowNet, volume: VolumeTerm,
                 config: ManifoldFlowConfig) -> None:
        super().__init__(net, torch.Size([config.data_dim]), torch.Size([config.param_dim]))
        self.volume = volume
        self.config = config

    # ------------------------------------------------------------------ parts
    @property
    def spec(self) -> ModelSpec:
        """What the estimator is made of (its config's spec)."""
        return self.config.spec

    @property
    def chart(self) -> ChartPart:
        return self.net.chart

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    @property
    def inner(self) -> InnerFlow:
        return self.net.inner

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
        """True when only the inner flow depends on θ (the chart is unconditional)."""
        return not self.chart.conditional

    @property
    def learns_manifold(self) -> bool:
        """Whether the chart has parameters to train (False for a prescribed chart)."""
        return self.chart.trainable

    def manifold_parameters(self) -> list[nn.Parameter]:
        """The parameters the manifold phase trains: chart and encoder (none when the chart
        is prescribed)."""
        if not self.learns_manifold:
            return []
        return [*self.chart.parameters(), *self.encoder.parameters()]

    # ------------------------------------------------------------------ checks
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

    # ---------------------------------------------------------------- contexts
    def context(self, condition: Tensor | None) -> Tensor | None:
        """Embedded θ (B, c), the context of the inner flow; None when unconditional."""
        if condition is None or self.net.embedding is None:
            return None
        return self.net.embedding(condition)

    def chart_context(self, condition: Tensor | None) -> Tensor | None:
        """The chart's context: embedded θ for a conditional manifold, else None."""
        return self.context(condition) if self.chart.conditional else None

    def _manifold_condition(self, condition: Tensor | None, batch: int) -> Tensor | None:
        """θ is needed for the maps only when the manifold is conditional."""
        return self._check_condition(condition, batch) if self.chart.conditional else None

    # ----------------------------------------------------------- manifold maps
    def encode_point(self, x: Tensor, condition: Tensor | None = None) -> ChartPoint:
        """Chart coordinates of x (unchecked; θ is used only by a conditional manifold)."""
        return self.encoder(x, self.chart, self.chart_context(condition))

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Chart coordinates u = e(x): (B, d) -> (B, n). θ only for a conditional manifold."""
        self._check_x(x)
        return self.encode_point(x, self._manifold_condition(condition, x.shape[0])).u

    def decode(self, u: Tensor, condition: Tensor | None = None) -> Tensor:
        """Points on the manifold g(u) = f⁻¹(u, 0): (B, n) -> (B, d)."""
        check_last_dim(u, self.manifold_dim, "u", min_dims=2)
        check_finite(u, "u")
        condition = self._manifold_condition(condition, u.shape[0])
        return self.chart.decode(u, self.chart_context(condition))

    def project_unchecked(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """g(e(x)) without input checks (the training losses call it per batch)."""
        context = self.chart_context(condition)
        return self.chart.decode(self.encoder(x, self.chart, context).u, context)

    def project(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Projection onto the manifold x' = g(e(x)): (B, d) -> (B, d)."""
        self._check_x(x)
        return self.project_unchecked(x, self._manifold_condition(condition, x.shape[0]))

    def reconstruction_error(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """‖x − g(e(x))‖₂ in the user's units: (B, d) -> (B,)."""
        return (x - self.project(x, condition)).norm(dim=-1)

    def log_det_metric(self, u: Tensor, condition: Tensor | None = None,
                       mode: str = "auto") -> Tensor:
        """log det(J_gᵀ J_g)(u), J_g = ∂g/∂u ∈ R^{d×n}: (B, n) -> (B,) (see
        :meth:`~sbi_mflow.flows.chart.ChartPart.log_det_metric`)."""
        return self.chart.log_det_metric(u, self.chart_context(condition), mode=mode)

    # --------------------------------------------------------------- densities
    def latent_log_prob(self, u: Tensor, condition: Tensor | None = None) -> Tensor:
        """log N(h(u; θ)) + log|det ∂h/∂u|: u (B, n), θ (B, p) -> (B,).

        The chart log-likelihood given the encoding; the NUTS potential uses it with
        observations encoded once.
        """
        return self.inner.log_prob(u, self.context(condition))

    def chart_log_prob(self, input: Tensor, condition: Tensor | None = None) -> Tensor:
        """Fixed-manifold (chart) log-likelihood, sbi shapes: (S,B,d)/(B,d), (B,p) -> (S,B).

        For models with a fixed manifold it differs from :meth:`log_prob` by a
        θ-independent term, so likelihood ratios and posteriors computed with it are exact.
        """
        x, condition, shape = self._flatten(input, condition)
        context = self.context(condition)
        point = self.encoder(x, self.chart, context if self.chart.conditional else None)
        return self.inner.log_prob(point.u, context).reshape(shape)

    def log_prob(self, input: Tensor, condition: Tensor | None = None, **kwargs) -> Tensor:
        """Exact log-likelihood, sbi shapes: (S,B,d)/(B,d), (B,p) -> (S,B).

        Chart log-likelihood plus the volume term: for a density on the manifold (M-flow,
        Me-flow, FOM) the density of the projected point w.r.t. the manifold's volume, for
        PIE the ambient density.
        """
        x, condition, shape = self._flatten(input, condition)
        context = self.context(condition)
        chart_context = context if self.chart.conditional else None
        point = self.encoder(x, self.chart, chart_context)
        value = self.inner.log_prob(point.u, context) + self.volume(
            self.chart, x, point, chart_context)
        return value.reshape(shape)

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
        """Points on the manifold: θ (B, p) -> (*sample_shape, B, d).

        Unconditional estimators take ``condition=None`` and return (*sample_shape, d).
        """
        sample_shape = torch.Size(sample_shape)
        num = sample_shape.numel()
        parameter = next(self.parameters())
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
        z = torch.randn(num * batch, self.manifold_dim, device=parameter.device,
                        dtype=parameter.dtype)
        context = self.context(repeated)
        u = self.inner.sample_from(z, context)
        x = self.chart.decode(u, context if self.chart.conditional else None)
        return x.reshape(out_shape)

    # -------------------------------------------------------------------- loss
    def loss(self, input: Tensor, condition: Tensor | None = None, **kwargs) -> Tensor:
        """Per-sample loss (B,) of plain ``sbi.inference.NLE`` training, from the parts
        (:func:`sbi_mflow.losses.training_loss`: the simultaneous loss for a density on
        the manifold, else −log q)."""
        return training_loss(self)(self, input, condition)
