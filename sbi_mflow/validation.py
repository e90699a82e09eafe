"""Input checks that turn bad input into clear errors instead of NaNs or deep tracebacks."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_finite", "check_last_dim"]


def check_last_dim(tensor: Tensor, expected: int, name: str, min_dims: int = 1) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a tensor whose last dimension is ``expected``."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.dim() < min_dims or tensor.shape[-1] != expected:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}, but its last dimension must be "
            f"{expected} (and it needs at least {min_dims} dimension(s))."
        )


def check_finite(tensor: Tensor, name: str) -> None:
    """Raise ``ValueError`` naming how many entries of ``tensor`` are NaN or infinite."""
    if not torch.is_floating_point(tensor):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}.")
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        count = int(bad.sum())
        raise ValueError(
            f"{name} contains {count} NaN or infinite value(s); remove or replace them "
            "before calling sbi-mflow."
        )
