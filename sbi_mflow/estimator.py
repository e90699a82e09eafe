"""M-flow, Me-flow and PIE as sbi conditional density estimators p(x | θ).

Notation (DESIGN.md): x ∈ R^d, θ ∈ R^p, manifold dimension n < d. An estimator is composed
of parts (built by :mod:`sbi_mflow.builders`):

* the chart: f = body ∘ standardise, f(x) = (u, v), decoder g(u) = f⁻¹(u, 0)
  (:class:`~sbi_mflow.flows.chart.Chart`);
* the encoder u = e(x): a slice of the chart (M-flow, PIE) or a network (Me-flow)
  (:mod:`sbi_mflow.flows.encoder`);
* the inner flow h(·; θ) on R^n with base N(0, I_n) (:class:`~sbi_mflow.flows.inner.InnerFlow`);
* the volume term (:mod:`sbi_mflow.flows.volume`): −½ log det(J_gᵀ J_g) (M-flow, Me-flow)
  or PIE's log N(v; 0, ε²) + log|det ∂f/∂x|;
* the training loss of plain sbi training (:mod:`sbi_mflow.losses`).

Densities: the chart log-likelihood log N(h(u; θ)) + log|det ∂h/∂u| with u = e(x), and the
exact log-likelihood = chart log-likelihood + volume term.

References:
    Brehmer, Cranmer. Flows for simultaneous manifold learning and density estimation.
    NeurIPS 2020.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from torch import Tensor, nn

from sbi_mflow.config import ManifoldFlowConfig
from sbi_mflow.flows.chart import Chart, ChartPoint
from sbi_mflow.flows.inner import InnerFlow
from sbi_mflow.flows.volume import VolumeTerm
from sbi_mflow.validation import check_finite, check_last_dim

__all__ = ["ManifoldFlowEstimator", "ManifoldFlowNet"]

#: ``loss(estimator, x (B, d), θ (B, p)) -> (B,)``, the per-sample loss of plain sbi training.
TrainingLoss = Callable[["ManifoldFlowEstimator", Tensor, "Tensor | None"], Tensor]


class ManifoldFlowNet(nn.Module):
    """The trainable parts, so that sbi's ``self.net`` holds all of them.

    Attributes:
        chart: standardisation + outer flow f with the projection.
        encoder: u = e(x) (a slice of the chart, or Me-flow's network).
        inner: the inner flow h on R^n.
        embedding: θ ↦ context of h (and of f for a conditional manifold); None when
            unconditional.
    """

    def __init__(self, chart: Chart, encoder: nn.Module, inner: InnerFlow,
                 embedding: nn.Module | None) -> None:
        super().__init__()
        self.chart = chart
        self.encoder = encoder
        self.inner = inner
        self.embedding = embedding


class ManifoldFlowEstimator(ConditionalDensityEstimator):
    """Conditional likelihood estimator p(x | θ) supported on a learned n-manifold.

    Follows sbi's shape conventions: ``log_prob(x (S,B,d) or (B,d), θ (B,p)) -> (S,B)``,
    ``sample(shape, θ (B,p)) -> (*shape, B, d)``, ``loss(x (B,d), θ (B,p)) -> (B,)``. With
    ``param_dim = 0`` the estimator is an unconditional density on a manifold and
    ``condition`` may be omitted.
    """

    def __init__(self, net: ManifoldFlowNet, volume: VolumeTerm, training_loss: TrainingLoss,
                 config: ManifoldFlowConfig) -> None:
        super().__init__(net, torch.Size([config.data_dim]), torch.Size([config.param_dim]))
        self.volume = volume
        self.training_loss = training_loss
        self.config = config

    # ------------------------------------------------------------------ parts
    @property
    def chart(self) -> Chart:
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
        """Chart coordinates u = e(x): (B, d) -> (B, n). θ only for 'pie-conditional'."""
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
        """Projection onto the learned manifold x' = g(e(x)): (B, d) -> (B, d)."""
        self._check_x(x)
        return self.project_unchecked(x, self._manifold_condition(condition, x.shape[0]))

    def reconstruction_error(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """‖x − g(e(x))‖₂ in the user's units: (B, d) -> (B,)."""
        return (x - self.project(x, condition)).norm(dim=-1)

    def log_det_metric(self, u: Tensor, condition: Tensor | None = None,
                       mode: str = "auto") -> Tensor:
        """log det(J_gᵀ J_g)(u), J_g = ∂g/∂u ∈ R^{d×n}: (B, n) -> (B,) (see
        :meth:`Chart.log_det_metric`)."""
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

        Chart log-likelihood plus the volume term: for M-flow / Me-flow the density of the
        projected point w.r.t. the manifold's volume, for PIE the ambient density.
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
        """Points on the learned manifold: θ (B, p) -> (*sample_shape, B, d).

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
        """Per-sample loss (B,) of plain ``sbi.inference.NLE`` training (the builder's
        choice, see :mod:`sbi_mflow.losses`: the simultaneous M-flow loss, or −log p)."""
        return self.training_loss(self, input, condition)
