"""Batched Jacobians of maps R^n → R^d and the volume term ½ log det(JᵀJ).

The decoder Jacobian J = ∂g/∂u (B, d, n) is computed with n forward-mode products in a
single pass: the batch is replicated n times and copy k carries the tangent e_k. This is
exact (no finite differences), works with nflows' spline transforms (which do not support
``torch.func.vmap``) and, when autograd is enabled, stays differentiable w.r.t. the
network's parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["batched_jacobian", "log_det_gram"]


def batched_jacobian(
    function: Callable[[Tensor, Tensor | None], Tensor],
    inputs: Tensor,
    context: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Value and Jacobian of a per-sample map.

    Args:
        function: ``function(inputs (N, n), context (N, c) or None) -> (N, d)``, acting
            on each row independently.
        inputs: (B, n).
        context: (B, c) or None, held fixed (not differentiated).

    Returns:
        outputs (B, d) and Jacobian (B, d, n) with J[b, i, k] = ∂ out_i / ∂ in_k.
    """
    batch, n = inputs.shape
    eye = torch.eye(n, dtype=inputs.dtype, device=inputs.device)
    replicated = inputs.unsqueeze(0).expand(n, batch, n).reshape(n * batch, n)
    tangents = eye.repeat_interleave(batch, dim=0)
    replicated_context = None
    if context is not None:
        replicated_context = context.unsqueeze(0).expand(n, *context.shape).reshape(
            n * batch, *context.shape[1:]
        )

    def apply(points: Tensor) -> Tensor:
        return function(points, replicated_context)

    outputs, directional = torch.func.jvp(apply, (replicated,), (tangents,))
    jacobian = directional.reshape(n, batch, -1).permute(1, 2, 0)
    return outputs[:batch], jacobian


def log_det_gram(jacobian: Tensor) -> Tensor:
    """log det(JᵀJ) for a batch of tall Jacobians (B, d, n), via QR: 2 Σ_i log|R_ii|."""
    r = torch.linalg.qr(jacobian, mode="reduced").R
    return 2.0 * torch.log(torch.diagonal(r, dim1=-2, dim2=-1).abs()).sum(-1)
