"""Flow stacks built from nflows parts: RQ-spline couplings, permutations, LU layers.

A stack of ``L`` coupling layers is ``[linear_0, coupling_0, ..., linear_{L-1},
coupling_{L-1}, linear_L]`` in the data → latent ("forward") direction, as in the paper.
Conditioners are nflows residual nets; when a context (embedded θ) is given they see it
both as an input and through a gate in every residual block.
"""

from __future__ import annotations

import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms import (
    AdditiveCouplingTransform,
    LULinear,
    Permutation,
    Transform,
)
from torch import Tensor

from sbi_mflow.flows.spline import SplineCoupling

__all__ = ["StableLULinear", "build_chart_body", "build_spline_stack", "graph_coupling"]


class StableLULinear(LULinear):
    """nflows' LU-linear layer with the inverse solved by ``torch.linalg.solve_triangular``.

    nflows 0.14 uses the deprecated ``torch.triangular_solve``; the maths is unchanged:
    x = U⁻¹ L⁻¹ (y − b), log|det| = −Σ log|U_ii|.
    """

    def inverse_no_cache(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        lower, upper = self._create_lower_upper()
        centred = (inputs - self.bias).T
        solved = torch.linalg.solve_triangular(lower, centred, upper=False, unitriangular=True)
        solved = torch.linalg.solve_triangular(upper, solved, upper=True)
        logabsdet = -self.logabsdet() * inputs.new_ones(inputs.shape[0])
        return solved.T, logabsdet


def _coupling_mask(features: int, layer: int) -> Tensor:
    """Alternating mask (1 = transformed); a single feature is always transformed."""
    if features == 1:
        return torch.ones(1)
    mask = torch.zeros(features)
    mask[layer % 2 :: 2] = 1.0
    return mask


def _permutations(features: int, count: int, compose_to_identity: bool) -> list[Tensor]:
    """Random permutations under which consecutive couplings transform different coordinates.

    Permutation k sits before coupling k, whose mask alternates by position. With purely
    random permutations two consecutive couplings can transform the same original
    coordinates: with two features and three couplings one coordinate may then never be
    transformed, and its density stays a standard normal whatever θ is. So permutation k
    (k ≥ 1) moves the coordinates that coupling k − 1 left unchanged onto the positions
    coupling k transforms (as many as fit, in random order) and shuffles the rest; the
    first is uniformly random. With ``compose_to_identity`` the last one undoes the others,
    so the stack starts as (close to) the identity map of the coordinates.
    """
    order = torch.arange(features)  # the original coordinate at each position
    permutations: list[Tensor] = []
    for index in range(count - 1):
        if index == 0:
            new_order = order[torch.randperm(features)]
        else:
            kept = _coupling_mask(features, index - 1) == 0  # identity positions of k − 1
            labels = torch.cat([_shuffled(order[kept]), _shuffled(order[~kept])])
            transform = _coupling_mask(features, index).bool()
            new_order = torch.empty_like(order)
            new_order[transform] = labels[: int(transform.sum())]
            new_order[~transform] = labels[int(transform.sum()):]
        permutations.append(torch.argsort(order)[new_order])  # order[p] == new_order
        order = new_order
    permutations.append(torch.argsort(order) if compose_to_identity else torch.randperm(features))
    return permutations


def _shuffled(values: Tensor) -> Tensor:
    return values[torch.randperm(values.numel())]


def _linear_layers(kind: str, features: int, count: int,
                   compose_to_identity: bool) -> list[Transform]:
    if kind == "lu":
        return [StableLULinear(features, identity_init=True) for _ in range(count)]
    return [Permutation(p) for p in _permutations(features, count, compose_to_identity)]


def build_spline_stack(
    features: int,
    num_layers: int,
    *,
    context_features: int | None,
    hidden_features: int,
    num_blocks: int,
    num_bins: int,
    tail_bound: float,
    linear_layer: str,
    dropout: float = 0.0,
    compose_to_identity: bool = False,
) -> list[Transform]:
    """Coupling layers with linear layers in between, as a list (data → latent order).

    Args:
        features: dimension of the space the stack acts on.
        context_features: dimension of the embedded condition, or None (unconditional).
        compose_to_identity: choose the last permutation so that all of them compose to
            the identity (the chart's tangent alignment then survives initialisation).

    Returns:
        ``2 * num_layers + 1`` transforms.
    """

    def conditioner(in_features: int, out_features: int) -> ResidualNet:
        return ResidualNet(
            in_features,
            out_features,
            hidden_features=hidden_features,
            context_features=context_features,
            num_blocks=num_blocks,
            dropout_probability=dropout,
        )

    linear = _linear_layers(linear_layer, features, num_layers + 1, compose_to_identity)
    layers: list[Transform] = []
    for index in range(num_layers):
        layers.append(linear[index])
        layers.append(
            SplineCoupling(
                mask=_coupling_mask(features, index),
                transform_net_create_fn=conditioner,
                num_bins=num_bins,
                tails="linear",
                tail_bound=tail_bound,
            )
        )
    layers.append(linear[-1])
    return layers


def graph_coupling(
    features: int,
    manifold_dim: int,
    *,
    context_features: int | None,
    hidden_features: int,
    num_blocks: int,
    dropout: float = 0.0,
) -> AdditiveCouplingTransform:
    """(a, b) ↦ (a, b + μ(a)), a the first n coordinates, b the other d − n (log|det| = 0).

    In the chart's aligned coordinates (a tangent, b normal) the points this layer maps to
    b + μ(a) = 0 form the graph b = −μ(a) of a learned function over the tangent space, so
    one layer represents any manifold that is a graph over its average tangent plane (the
    later layers only refine it). μ starts at zero (the last layer of its net is
    zero-initialised), so the layer starts as the identity and the alignment survives.

    References:
        Dinh, Krueger, Bengio. NICE: Non-linear independent components estimation. 2014
        (additive coupling).
    """
    mask = torch.zeros(features)
    mask[manifold_dim:] = 1.0

    def conditioner(in_features: int, out_features: int) -> ResidualNet:
        net = ResidualNet(in_features, out_features, hidden_features=hidden_features,
                          context_features=context_features, num_blocks=num_blocks,
                          dropout_probability=dropout)
        torch.nn.init.zeros_(net.final_layer.weight)
        torch.nn.init.zeros_(net.final_layer.bias)
        return net

    return AdditiveCouplingTransform(mask, conditioner)


def build_chart_body(
    data_dim: int,
    manifold_dim: int,
    num_layers: int,
    *,
    context_features: int | None,
    hidden_features: int,
    num_blocks: int,
    num_bins: int,
    tail_bound: float,
    linear_layer: str,
    dropout: float = 0.0,
    tangent_alignment: bool = True,
    graph_layer: bool = True,
) -> list[Transform]:
    """The trainable layers of a learned chart f (data → latent order): an optional
    :func:`graph_coupling` first, then a :func:`build_spline_stack` of ``num_layers``
    couplings whose permutations compose to the identity when ``tangent_alignment`` (so
    the alignment survives initialisation).

    Draws fresh random weights and permutations on every call: a chart keeps this recipe
    (as a ``functools.partial``) to re-initialise itself.
    """
    body = build_spline_stack(
        data_dim, num_layers, context_features=context_features,
        hidden_features=hidden_features, num_blocks=num_blocks, num_bins=num_bins,
        tail_bound=tail_bound, linear_layer=linear_layer, dropout=dropout,
        compose_to_identity=tangent_alignment)
    if graph_layer:  # first in the data → latent direction, on aligned coordinates
        body.insert(0, graph_coupling(
            data_dim, manifold_dim, context_features=context_features,
            hidden_features=hidden_features, num_blocks=num_blocks, dropout=dropout))
    return body
