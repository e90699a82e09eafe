"""Batched Jacobians of per-sample maps R^n → R^d and the volume term log det(JᵀJ).

Two exact strategies, both a single batched pass (nflows' spline transforms do not support
``torch.func.vmap``, so the batch is replicated instead):

* forward mode: the batch is replicated n times and copy k carries the tangent e_k; one
  ``torch.func.jvp`` gives all n columns. Best for large batches and d ≫ n.
* reverse mode: the batch is replicated d times, copy i is back-propagated with the
  cotangent e_i; one ``torch.autograd.grad`` gives all d rows. Forward-mode AD has a
  large per-operation overhead in PyTorch, so this wins for small problems.

``mode="auto"`` picks reverse mode when d·B is small or d ≤ 2n. Either way the result is
differentiable w.r.t. the map's parameters when ``create_graph`` is true.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["batched_jacobian", "log_det_gram"]

_REVERSE_MODE_MAX_ROWS = 4096

PerSampleMap = Callable[[Tensor, Tensor | None], Tensor]


def _replicate(tensor: Tensor | None, copies: int) -> Tensor | None:
    # ``repeat`` copies: autograd cannot write into expanded (aliased) memory.
    return None if tensor is None else tensor.repeat(copies, 1)


def _forward_mode(function: PerSampleMap, inputs: Tensor, context: Tensor | None) -> Tensor:
    batch, n = inputs.shape
    tangents = torch.eye(n, dtype=inputs.dtype, device=inputs.device).repeat_interleave(batch, 0)
    replicated_context = _replicate(context, n)
    _, directional = torch.func.jvp(
        lambda points: function(points, replicated_context), (_replicate(inputs, n),), (tangents,)
    )
    return directional.reshape(n, batch, -1).permute(1, 2, 0)


def _reverse_mode(
    function: PerSampleMap, inputs: Tensor, context: Tensor | None, data_dim: int,
    create_graph: bool,
) -> Tensor:
    batch, n = inputs.shape
    with torch.enable_grad():
        replicated = _replicate(inputs, data_dim)
        if not replicated.requires_grad:
            replicated.requires_grad_(True)
        outputs = function(replicated, _replicate(context, data_dim))
        cotangents = torch.eye(data_dim, dtype=outputs.dtype, device=outputs.device)
        (rows,) = torch.autograd.grad(
            outputs, replicated, cotangents.repeat_interleave(batch, 0), create_graph=create_graph
        )
    return rows.reshape(data_dim, batch, n).permute(1, 0, 2)


def batched_jacobian(
    function: PerSampleMap,
    inputs: Tensor,
    context: Tensor | None = None,
    *,
    data_dim: int,
    mode: str = "auto",
    create_graph: bool = False,
) -> Tensor:
    """Jacobian J[b, i, k] = ∂ function(inputs)_b,i / ∂ inputs_b,k of a per-sample map.

    Args:
        function: ``function(points (N, n), context (N, c) or None) -> (N, d)``, acting on
            each row independently.
        inputs: (B, n).
        context: (B, c) or None, held fixed (not differentiated).
        data_dim: d, the output dimension.
        mode: "forward", "reverse" or "auto".
        create_graph: keep the graph so the Jacobian can be differentiated further.

    Returns:
        (B, d, n).
    """
    batch, n = inputs.shape
    if mode == "auto":
        small = data_dim * batch <= _REVERSE_MODE_MAX_ROWS
        mode = "reverse" if small or data_dim <= 2 * n else "forward"
    if mode == "reverse":
        return _reverse_mode(function, inputs, context, data_dim, create_graph)
    if mode != "forward":
        raise ValueError(f"mode must be 'forward', 'reverse' or 'auto', got {mode!r}.")
    with torch.set_grad_enabled(create_graph):
        return _forward_mode(function, inputs, context)


def log_det_gram(jacobian: Tensor) -> Tensor:
    """log det(JᵀJ) for a batch of tall Jacobians (B, d, n), via QR: 2 Σ_i log|R_ii|."""
    r = torch.linalg.qr(jacobian, mode="reduced").R
    return 2.0 * torch.log(torch.diagonal(r, dim1=-2, dim2=-1).abs()).sum(-1)
