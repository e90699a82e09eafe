"""Builders: ``build(batch_theta, batch_x) -> ManifoldFlowEstimator`` for sbi's NLE.

:func:`build_estimator` composes an estimator from the parts its
:class:`~sbi_mflow.models.ModelSpec` names, one table per part; model names are presets of
a spec (:data:`sbi_mflow.models.PRESETS`).
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from nflows.nn.nets import ResidualNet
from sbi.utils.sbiutils import Standardize
from torch import Tensor, nn

from sbi_mflow.config import ManifoldFlowConfig
from sbi_mflow.estimator import ManifoldFlowEstimator, ManifoldFlowNet
from sbi_mflow.flows.alignment import HouseholderAlignment, tangent_frame
from sbi_mflow.flows.chart import Chart, ChartPart, Standardization
from sbi_mflow.flows.encoder import ChartEncoder, NetworkEncoder
from sbi_mflow.flows.inner import InnerFlow
from sbi_mflow.flows.prescribed import ExactChart, check_prescribed_chart
from sbi_mflow.flows.stack import build_chart_body, build_spline_stack
from sbi_mflow.flows.volume import ManifoldVolume, OffManifoldGaussian, VolumeTerm
from sbi_mflow.models import ModelSpec, model_spec
from sbi_mflow.validation import check_finite

__all__ = ["ManifoldFlowBuilder", "build_estimator", "manifold_likelihood_nn"]


def _theta_standardizer(batch_theta: Tensor | None, param_dim: int) -> Standardize:
    """θ ↦ (θ − mean)/std from a batch; std floored at 1e-7 as in sbi."""
    if batch_theta is None:
        return Standardize(torch.zeros(param_dim), torch.ones(param_dim))
    theta = batch_theta.detach().to("cpu", torch.float64)
    theta = theta[torch.isfinite(theta).all(dim=1)]
    std = theta.std(0).clamp_min(1e-7) if theta.shape[0] > 1 else torch.ones(param_dim)
    return Standardize(theta.mean(0).float(), std.float())


def _spline_options(config: ManifoldFlowConfig) -> dict[str, Any]:
    return dict(hidden_features=config.hidden_features, num_blocks=config.num_blocks,
                num_bins=config.num_bins, tail_bound=config.tail_bound,
                linear_layer=config.linear_layer, dropout=config.dropout)


# ----------------------------------------------------------------------------- charts
def _learned_chart(config: ManifoldFlowConfig, batch_x: Tensor | None,
                   prescribed: nn.Module | None) -> Chart:
    """Outer flow f: graph layer and spline couplings on standardised, aligned x."""
    context = config.param_dim if config.spec.conditional_manifold else None
    recipe = functools.partial(
        build_chart_body, config.data_dim, config.manifold_dim, config.outer_layers,
        context_features=context, tangent_alignment=config.tangent_alignment,
        graph_layer=config.graph_layer, **_spline_options(config))
    standardize = Standardization.from_data(batch_x, config.data_dim)
    alignment = None
    if config.tangent_alignment:
        frame = torch.eye(config.data_dim, config.manifold_dim)  # a loaded state overwrites it
        if batch_x is not None:
            with torch.no_grad():
                frame = tangent_frame(standardize(batch_x.float())[0], config.manifold_dim)
        alignment = HouseholderAlignment.from_frame(frame)
    return Chart(standardize, recipe, config.manifold_dim,
                 conditional=config.spec.conditional_manifold, alignment=alignment)


def _prescribed_chart(config: ManifoldFlowConfig, batch_x: Tensor | None,
                      prescribed: nn.Module) -> ExactChart:
    """The user's chart g* (a copy, so the user's module is never moved or changed)."""
    check_prescribed_chart(prescribed, config.data_dim)
    return ExactChart(copy.deepcopy(prescribed),
                      Standardization.from_data(batch_x, config.data_dim))


#: spec.chart -> ``chart(config, batch_x, prescribed chart or None)``.
_CHARTS: dict[str, Callable[..., ChartPart]] = {
    "learned": _learned_chart,
    "prescribed": _prescribed_chart,
}


# --------------------------------------------------------------------------- encoders
def _network_encoder(config: ManifoldFlowConfig) -> NetworkEncoder:
    return NetworkEncoder(functools.partial(
        ResidualNet, config.data_dim, config.manifold_dim,
        hidden_features=config.encoder_hidden_features, num_blocks=config.encoder_blocks))


#: spec.encoder -> ``encoder(config)``.
_ENCODERS: dict[str, Callable[[ManifoldFlowConfig], nn.Module]] = {
    "chart": lambda config: ChartEncoder(),
    "network": _network_encoder,
}

#: spec.volume -> ``volume(config)``.
_VOLUMES: dict[str, Callable[[ManifoldFlowConfig], VolumeTerm]] = {
    "manifold": lambda config: ManifoldVolume(),
    "off-manifold": lambda config: OffManifoldGaussian(config.epsilon),
}


def _inner(config: ManifoldFlowConfig, chart: ChartPart, batch_x: Tensor | None) -> InnerFlow:
    """Spline couplings on R^n, after the chart's standardisation of u if it asks for one."""
    context = config.param_dim if config.param_dim > 0 else None
    recipe = functools.partial(build_spline_stack, config.manifold_dim, config.inner_layers,
                               context_features=context, **_spline_options(config))
    return InnerFlow(recipe, chart.latent_standardization(batch_x))


def _check_chart_given(spec: ModelSpec, chart: nn.Module | None) -> None:
    """A chart is given exactly when the spec's chart is prescribed."""
    if chart is None and spec.needs_chart:
        raise ValueError(f"Model {spec.label} needs the chart: pass chart=... (an nn.Module "
                         "with decode, encode, manifold_dim, data_dim).")
    if chart is not None and not spec.needs_chart:
        raise ValueError(f"Model {spec.label} learns its chart; chart= is for a prescribed "
                         "chart (the 'fom' model).")


def build_estimator(
    config: ManifoldFlowConfig,
    batch_theta: Tensor | None = None,
    batch_x: Tensor | None = None,
    chart: nn.Module | None = None,
) -> ManifoldFlowEstimator:
    """Compose an estimator from the parts ``config.spec`` names; standardisation statistics
    come from the batches.

    Without batches the standardisations are identities (used when loading a state dict,
    which then overwrites them). ``chart``: the prescribed chart of a spec that needs one
    (it is copied).
    """
    spec = config.spec
    _check_chart_given(spec, chart)
    embedding = (_theta_standardizer(batch_theta, config.param_dim)
                 if config.param_dim > 0 else None)
    chart_part = _CHARTS[spec.chart](config, batch_x, chart)
    encoder = _ENCODERS[spec.encoder](config)
    net = ManifoldFlowNet(chart_part, encoder, _inner(config, chart_part, batch_x), embedding)
    return ManifoldFlowEstimator(net, _VOLUMES[spec.volume](config), config)


class ManifoldFlowBuilder:
    """Picklable ``build(batch_theta, batch_x)`` callable, as sbi's NLE expects.

    Data and parameter dimensions are read from the first training batch;
    ``manifold_dim="auto"`` is estimated from it then (once; see
    :func:`manifold_likelihood_nn`).
    """

    def __init__(self, model: str | ModelSpec, manifold_dim: int | str | None = None,
                 chart: nn.Module | None = None, **options: Any) -> None:
        self.spec = model_spec(model)
        _check_chart_given(self.spec, chart)
        if chart is not None:  # the chart fixes n
            check_prescribed_chart(chart)
            if manifold_dim not in (None, "auto", chart.manifold_dim):
                raise ValueError(f"manifold_dim={manifold_dim} differs from the chart's "
                                 f"manifold_dim={chart.manifold_dim}.")
            manifold_dim = chart.manifold_dim
        if manifold_dim != "auto" and not isinstance(manifold_dim, int):
            raise ValueError(f"manifold_dim must be an int n or 'auto' (estimated from the "
                             f"data), got {manifold_dim!r}.")
        # Validate the options early with placeholder dimensions.
        placeholder = 1 if manifold_dim == "auto" else manifold_dim
        ManifoldFlowConfig(spec=self.spec, data_dim=placeholder + 1, manifold_dim=placeholder,
                           param_dim=1, **options)
        self.manifold_dim = manifold_dim
        self.chart = chart
        self.options = options

    @property
    def model(self) -> str | None:
        """The preset name of the spec (None for a spec composed by hand)."""
        return self.spec.name

    def config_for(self, data_dim: int, param_dim: int) -> ManifoldFlowConfig:
        return ManifoldFlowConfig(spec=self.spec, data_dim=data_dim,
                                  manifold_dim=self.manifold_dim, param_dim=param_dim,
                                  **self.options)

    def _resolve_manifold_dim(self, batch_x: Tensor) -> None:
        """n from :func:`sbi_mflow.dimension.estimate_manifold_dim` on the first batch."""
        from sbi_mflow.dimension import estimate_manifold_dim

        result = estimate_manifold_dim(batch_x)
        self.dimension_estimate = result
        if result.manifold_dim is None:
            raise ValueError(
                f"manifold_dim='auto' found no manifold in the {batch_x.shape[0]} training "
                f"points: {result.reason}. For full-rank data use an ambient flow (sbi's "
                "likelihood_nn('nsf')); to force a manifold, pass manifold_dim=n."
            )
        if not result.confirmed:
            warnings.warn(f"manifold_dim='auto' uses n = {result.manifold_dim}, {result.reason}.",
                          UserWarning, stacklevel=4)
        self.manifold_dim = int(result.manifold_dim)

    def __call__(self, batch_theta: Tensor | None, batch_x: Tensor) -> ManifoldFlowEstimator:
        if not isinstance(batch_x, Tensor) or batch_x.dim() != 2:
            shape = tuple(batch_x.shape) if isinstance(batch_x, Tensor) else type(batch_x)
            raise ValueError(f"batch_x must be a (num_samples, data_dim) tensor, got {shape}.")
        check_finite(batch_x, "batch_x")
        param_dim = 0
        if batch_theta is not None:
            if batch_theta.dim() != 2 or batch_theta.shape[0] != batch_x.shape[0]:
                raise ValueError(
                    f"batch_theta must have shape ({batch_x.shape[0]}, param_dim), "
                    f"got {tuple(batch_theta.shape)}."
                )
            check_finite(batch_theta, "batch_theta")
            param_dim = batch_theta.shape[1]
        if self.manifold_dim == "auto":
            self._resolve_manifold_dim(batch_x)
        config = self.config_for(batch_x.shape[1], param_dim)
        return build_estimator(config, batch_theta, batch_x, chart=self.chart)

    def __repr__(self) -> str:
        model = self.spec.name or self.spec
        return f"ManifoldFlowBuilder({model!r}, manifold_dim={self.manifold_dim!r})"


def manifold_likelihood_nn(model: str | ModelSpec, manifold_dim: int | str | None = None,
                           *, chart: nn.Module | None = None,
                           **options: Any) -> ManifoldFlowBuilder:
    """Builder of a manifold-learning flow likelihood estimator for ``sbi``.

    Args:
        model: a preset name, "mflow", "meflow", "pie" (unconditional manifold),
            "pie-conditional" (the original PIE: the outer flow is conditioned on θ too) or
            "fom" (a flow on a prescribed manifold: needs ``chart``); or a
            :class:`~sbi_mflow.models.ModelSpec` composing the parts by hand.
        manifold_dim: n, the dimension of the manifold (must be < d); "auto" estimates it
            from the first training batch (:func:`sbi_mflow.dimension.estimate_manifold_dim`);
            with ``chart`` it defaults to the chart's.
        chart: the prescribed chart of "fom", an ``nn.Module`` satisfying
            :class:`sbi_mflow.PrescribedChart` (e.g. ``PolynomialSurface().manifold_chart()``).
        **options: fields of :class:`ManifoldFlowConfig`: ``outer_layers`` (5),
            ``inner_layers`` (5), ``hidden_features`` (64), ``num_blocks`` (2),
            ``num_bins`` (8), ``tail_bound`` (6.0), ``linear_layer`` ("permutation" or
            "lu"), ``encoder_hidden_features`` (100), ``encoder_blocks`` (5),
            ``epsilon`` (0.01), ``reconstruction_weight`` (1000.0), ``dropout`` (0.0),
            ``tangent_alignment`` (True), ``graph_layer`` (True); those of parts the model
            does not have are ignored.

    Returns:
        ``build(batch_theta, batch_x)``; pass it as ``NLE(prior, density_estimator=build)``.
        ``build(None, batch_x)`` gives an unconditional density estimator on a manifold.
    """
    return ManifoldFlowBuilder(model, manifold_dim, chart=chart, **options)
