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
    LULinear,
    PiecewiseRationalQuadraticCouplingTransform,
    PointwiseAffineTransform,
    RandomPermutation,
    Transform,
)
from torch import Tensor

__all__ = ["StableLULinear", "build_spline_stack", "standardizing_affine"]


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


def _linear_layer(kind: str, features: int) -> Transform:
    if kind == "lu":
        return StableLULinear(features, identity_init=True)
    return RandomPermutation(features)


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
) -> list[Transform]:
    """Coupling layers with linear layers in between, as a list (data → latent order).

    Args:
        features: dimension of the space the stack acts on.
        context_features: dimension of the embedded condition, or None (unconditional).

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

    layers: list[Transform] = []
    for index in range(num_layers):
        layers.append(_linear_layer(linear_layer, features))
        layers.append(
            PiecewiseRationalQuadraticCouplingTransform(
                mask=_coupling_mask(features, index),
                transform_net_create_fn=conditioner,
                num_bins=num_bins,
                tails="linear",
                tail_bound=tail_bound,
            )
        )
    layers.append(_linear_layer(linear_layer, features))
    return layers


def standardizing_affine(batch_x: Tensor | None, features: int) -> PointwiseAffineTransform:
    """Affine map x ↦ (x − mean) / std with statistics from a batch (identity without one).

    Near-constant coordinates (exactly manifold-supported data can have them) get their
    std floored at 1e-3 times the median std, instead of sbi's 1e-14, which would blow up.
    """
    if batch_x is None:
        mean = torch.zeros(features)
        std = torch.ones(features)
    else:
        finite = batch_x[torch.isfinite(batch_x).all(dim=1)].detach().to("cpu", torch.float64)
        if finite.shape[0] < 2:
            raise ValueError("Need at least two finite rows of x to standardise the data.")
        mean = finite.mean(0)
        std = finite.std(0)
        floor = max(float(std.median()) * 1e-3, 1e-8)
        std = std.clamp_min(floor)
        mean, std = mean.float(), std.float()
    return PointwiseAffineTransform(shift=-mean / std, scale=1.0 / std)
