"""Builders: ``build(batch_theta, batch_x) -> ManifoldFlowEstimator`` for sbi's NLE."""

from __future__ import annotations

from typing import Any

import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms import CompositeTransform
from sbi.utils.sbiutils import Standardize
from torch import Tensor, nn

from sbi_mflow.config import MODELS, ManifoldFlowConfig
from sbi_mflow.estimator import ManifoldFlowEstimator, ManifoldFlowNet
from sbi_mflow.flows.alignment import HouseholderAlignment, tangent_frame
from sbi_mflow.flows.chart import Chart, Standardization
from sbi_mflow.flows.encoder import ChartEncoder, NetworkEncoder
from sbi_mflow.flows.inner import InnerFlow
from sbi_mflow.flows.stack import build_spline_stack, graph_coupling
from sbi_mflow.flows.volume import ManifoldVolume, OffManifoldGaussian, VolumeTerm
from sbi_mflow.losses import Loss, NegativeLogLikelihood, SimultaneousLoss
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
    return dict(
        hidden_features=config.hidden_features,
        num_blocks=config.num_blocks,
        num_bins=config.num_bins,
        tail_bound=config.tail_bound,
        linear_layer=config.linear_layer,
        dropout=config.dropout,
    )


def _chart(config: ManifoldFlowConfig, batch_x: Tensor | None) -> Chart:
    context = config.param_dim if config.conditional_manifold else None
    body = build_spline_stack(config.data_dim, config.outer_layers, context_features=context,
                              compose_to_identity=config.tangent_alignment,
                              **_spline_options(config))
    if config.graph_layer:  # first in the data → latent direction, on aligned coordinates
        body.insert(0, graph_coupling(
            config.data_dim, config.manifold_dim, context_features=context,
            hidden_features=config.hidden_features, num_blocks=config.num_blocks,
            dropout=config.dropout))
    standardize = Standardization.from_data(batch_x, config.data_dim)
    alignment = None
    if config.tangent_alignment:
        frame = torch.eye(config.data_dim, config.manifold_dim)  # a loaded state overwrites it
        if batch_x is not None:
            with torch.no_grad():
                frame = tangent_frame(standardize(batch_x.float())[0], config.manifold_dim)
        alignment = HouseholderAlignment.from_frame(frame)
    return Chart(standardize, CompositeTransform(body), config.manifold_dim,
                 conditional=config.conditional_manifold, alignment=alignment)


def _encoder(config: ManifoldFlowConfig) -> nn.Module:
    if config.model != "meflow":
        return ChartEncoder()
    return NetworkEncoder(ResidualNet(
        config.data_dim, config.manifold_dim, hidden_features=config.encoder_hidden_features,
        num_blocks=config.encoder_blocks,
    ))


def _inner(config: ManifoldFlowConfig) -> InnerFlow:
    context = config.param_dim if config.param_dim > 0 else None
    return InnerFlow(build_spline_stack(config.manifold_dim, config.inner_layers,
                                        context_features=context, **_spline_options(config)))


def _volume_and_loss(config: ManifoldFlowConfig) -> tuple[VolumeTerm, Loss]:
    """M-flow / Me-flow: density on the manifold, simultaneous loss; PIE: ambient, −log p."""
    if config.model in ("mflow", "meflow"):
        return ManifoldVolume(), SimultaneousLoss(config.reconstruction_weight)
    return OffManifoldGaussian(config.epsilon), NegativeLogLikelihood()


def build_estimator(
    config: ManifoldFlowConfig,
    batch_theta: Tensor | None = None,
    batch_x: Tensor | None = None,
) -> ManifoldFlowEstimator:
    """Compose an estimator from its parts; standardisation statistics come from the batches.

    This is the one place that maps a model name to parts. Without batches the
    standardisations are identities (used when loading a state dict, which then
    overwrites them).
    """
    embedding = (_theta_standardizer(batch_theta, config.param_dim)
                 if config.param_dim > 0 else None)
    net = ManifoldFlowNet(_chart(config, batch_x), _encoder(config), _inner(config), embedding)
    volume, loss = _volume_and_loss(config)
    return ManifoldFlowEstimator(net, volume, loss, config)


class ManifoldFlowBuilder:
    """Picklable ``build(batch_theta, batch_x)`` callable, as sbi's NLE expects.

    Data and parameter dimensions are read from the first training batch.
    """

    def __init__(self, model: str, manifold_dim: int, **options: Any) -> None:
        if model not in MODELS:
            raise ValueError(f"Unknown model {model!r}; choose one of {MODELS}.")
        # Validate the options early with a placeholder data dimension.
        ManifoldFlowConfig(model=model, data_dim=manifold_dim + 1, manifold_dim=manifold_dim,
                           param_dim=1, **options)
        self.model = model
        self.manifold_dim = manifold_dim
        self.options = options

    def config_for(self, data_dim: int, param_dim: int) -> ManifoldFlowConfig:
        return ManifoldFlowConfig(
            model=self.model, data_dim=data_dim, manifold_dim=self.manifold_dim,
            param_dim=param_dim, **self.options,
        )

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
        config = self.config_for(batch_x.shape[1], param_dim)
        return build_estimator(config, batch_theta, batch_x)

    def __repr__(self) -> str:
        return f"ManifoldFlowBuilder({self.model!r}, manifold_dim={self.manifold_dim})"


def manifold_likelihood_nn(model: str, manifold_dim: int, **options: Any) -> ManifoldFlowBuilder:
    """Builder of an M-flow / Me-flow / PIE likelihood estimator for ``sbi``.

    Args:
        model: "mflow", "meflow", "pie" (unconditional manifold) or "pie-conditional"
            (the original PIE: the outer flow is conditioned on θ too).
        manifold_dim: n, the dimension of the learned manifold (must be < d).
        **options: fields of :class:`ManifoldFlowConfig`: ``outer_layers`` (5),
            ``inner_layers`` (5), ``hidden_features`` (64), ``num_blocks`` (2),
            ``num_bins`` (8), ``tail_bound`` (6.0), ``linear_layer`` ("permutation" or
            "lu"), ``encoder_hidden_features`` (100), ``encoder_blocks`` (5),
            ``epsilon`` (0.01), ``reconstruction_weight`` (1000.0), ``dropout`` (0.0),
            ``tangent_alignment`` (True), ``graph_layer`` (True).

    Returns:
        ``build(batch_theta, batch_x)``; pass it as ``NLE(prior, density_estimator=build)``.
        ``build(None, batch_x)`` gives an unconditional density estimator on a manifold.
    """
    return ManifoldFlowBuilder(model, manifold_dim, **options)
