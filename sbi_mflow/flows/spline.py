"""A branch-free rational-quadratic spline, and the nflows coupling layer that uses it.

Monotonic rational-quadratic spline on [−B, B] with K bins and identity ("linear") tails
outside (Durkan et al. 2019, eqs. 4–8). Knots (x_k, y_k), k = 0 … K, bin widths w_k and
heights h_k, slopes s_k = h_k / w_k, derivatives δ_k at the knots (δ_0 = δ_K = 1). For x in
bin k, with ξ = (x − x_k) / w_k,

    y = y_k + h_k (s_k ξ² + δ_k ξ(1−ξ)) / (s_k + (δ_{k+1} + δ_k − 2 s_k) ξ(1−ξ)),
    dy/dx = s_k² (δ_{k+1} ξ² + 2 s_k ξ(1−ξ) + δ_k (1−ξ)²)
            / (s_k + (δ_{k+1} + δ_k − 2 s_k) ξ(1−ξ))².

The inverse solves the quadratic a ξ² + b ξ + c = 0 for ξ in [0, 1] with the numerically
stable root ξ = 2c / (−b − √(b² − 4ac)).

nflows evaluates the spline only on the entries inside [−B, B], found with boolean masks
and a data-dependent ``torch.any``: every call synchronises with the host and has
data-dependent shapes, so a training step can neither be captured as a CUDA graph nor
compiled as one graph. Here every entry is evaluated at a clamped input and the tails are
selected with ``torch.where``: the same numbers, static shapes, no host synchronisation, and
far fewer (and larger) kernels. The parametrisation is nflows' (softmax widths and heights
with minimum sizes, softplus derivatives, widths and heights scaled by 1/√hidden), so a
layer gives nflows' outputs and log-determinants on the same weights.

References:
    Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.
"""

from __future__ import annotations

import math

import torch
from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform
from torch import Tensor

__all__ = ["SplineCoupling", "rational_quadratic_spline"]

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def _softplus(x: Tensor) -> Tensor:
    """log(1 + eˣ) = max(x, 0) + log1p(e^{−|x|}) (torch's softplus kernel is slow on small
    CPU tensors; this is the same function, stable for any x)."""
    return x.clamp(min=0.0) + torch.log1p(torch.exp(-x.abs()))


def _knots(unnormalized: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor]:
    """Knot positions (K+1, N) from −B to B and bin sizes (K, N); bins on the first axis."""
    num_bins = unnormalized.shape[0]
    sizes = min_size + (1.0 - min_size * num_bins) * torch.softmax(unnormalized, dim=0)
    inner = torch.cumsum(sizes[:-1], dim=0) * (2.0 * bound) - bound
    ends = inner.new_full((1, inner.shape[1]), bound)
    knots = torch.cat((-ends, inner, ends), dim=0)
    return knots, knots[1:] - knots[:-1]


def rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool = False,
    tail_bound: float = 1.0,
    min_bin_width: float = MIN_BIN_WIDTH,
    min_bin_height: float = MIN_BIN_HEIGHT,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """Elementwise spline y = RQS(x) (or its inverse) with identity tails outside [−B, B].

    Args:
        inputs: (…,).
        unnormalized_widths, unnormalized_heights: (…, K).
        unnormalized_derivatives: (…, K − 1), the interior knots' derivatives before
            ``min_derivative + softplus``.
        inverse: evaluate x = RQS⁻¹(y) instead.
        tail_bound: B.

    Returns:
        outputs (…,) and log|d outputs / d inputs| (…,).
    """
    shape = inputs.shape
    num_bins = unnormalized_widths.shape[-1]
    x = inputs.reshape(-1)
    # Bins on the first axis: reductions over a leading axis run vectorised along the
    # contiguous last one (a last axis of K ≈ 8 takes torch's slow paths on the CPU).
    widths_in = unnormalized_widths.reshape(-1, num_bins).T
    heights_in = unnormalized_heights.reshape(-1, num_bins).T
    derivatives_in = unnormalized_derivatives.reshape(-1, num_bins - 1).T
    bound = float(tail_bound)
    inside = (x >= -bound) & (x <= bound)
    clamped = x.clamp(-bound, bound)
    x_knots, widths = _knots(widths_in, bound, min_bin_width)
    y_knots, heights = _knots(heights_in, bound, min_bin_height)
    one = derivatives_in.new_ones((1, derivatives_in.shape[1]))
    derivatives = torch.cat((one, min_derivative + _softplus(derivatives_in), one), dim=0)

    # Bin of each input: the number of interior knots at or below it, as a one-hot mask
    # (static shapes; a product instead of a gather keeps the backward pass cheap).
    knots = y_knots if inverse else x_knots
    index = (clamped.unsqueeze(0) >= knots[1:-1]).sum(0, keepdim=True)  # (1, N)
    bins = torch.arange(num_bins, device=x.device).unsqueeze(1)
    one_hot = (bins == index).to(x.dtype)  # (K, N)
    table = torch.stack((x_knots[:-1], widths, y_knots[:-1], heights,
                         derivatives[:-1], derivatives[1:]))  # (6, K, N)
    x_k, w_k, y_k, h_k, d_k, d_k1 = (table * one_hot).sum(1).unbind(0)
    s_k = h_k / w_k
    curvature = d_k1 + d_k - 2.0 * s_k

    if inverse:
        offset = clamped - y_k
        a = h_k * (s_k - d_k) + offset * curvature
        b = h_k * d_k - offset * curvature
        c = -s_k * offset
        discriminant = (b.pow(2) - 4.0 * a * c).clamp_min(0.0)
        xi = (2.0 * c) / (-b - torch.sqrt(discriminant))
        spline = xi * w_k + x_k
    else:
        xi = (clamped - x_k) / w_k
    xi_1m = xi * (1.0 - xi)
    denominator = s_k + curvature * xi_1m
    if not inverse:
        spline = y_k + h_k * (s_k * xi.pow(2) + d_k * xi_1m) / denominator
    numerator = s_k.pow(2) * (d_k1 * xi.pow(2) + 2.0 * s_k * xi_1m + d_k * (1.0 - xi).pow(2))
    log_derivative = torch.log(numerator) - 2.0 * torch.log(denominator)
    if inverse:
        log_derivative = -log_derivative
    outputs = torch.where(inside, spline, x)
    logabsdet = torch.where(inside, log_derivative, torch.zeros_like(log_derivative))
    return outputs.reshape(shape), logabsdet.reshape(shape)


class SplineCoupling(PiecewiseRationalQuadraticCouplingTransform):
    """nflows' rational-quadratic coupling layer evaluated with the branch-free spline.

    Same constructor, parameters and state dict as
    ``nflows.transforms.PiecewiseRationalQuadraticCouplingTransform`` with
    ``tails="linear"``; only the spline evaluation differs (see the module docstring).
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("tails", "linear")
        if kwargs["tails"] != "linear":
            raise ValueError("SplineCoupling implements linear tails only.")
        super().__init__(*args, **kwargs)
        hidden = getattr(self.transform_net, "hidden_features", None)
        self._size_scale = 1.0 / math.sqrt(hidden) if hidden else 1.0

    def _piecewise_cdf(self, inputs: Tensor, transform_params: Tensor,
                       inverse: bool = False) -> tuple[Tensor, Tensor]:
        k = self.num_bins
        return rational_quadratic_spline(
            inputs,
            transform_params[..., :k] * self._size_scale,
            transform_params[..., k : 2 * k] * self._size_scale,
            transform_params[..., 2 * k :],
            inverse=inverse,
            tail_bound=self.tail_bound,
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
        )
