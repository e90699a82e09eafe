"""Shared test helpers: small estimators with random (non-trivial) weights."""

from __future__ import annotations

import torch

import sbi_mflow
from sbi_mflow.estimator import ManifoldFlowEstimator

__all__ = ["cycle_permutations", "perturbed_estimator"]


def cycle_permutations(estimator: ManifoldFlowEstimator) -> None:
    """Replace every permutation of the outer flow by a cyclic shift (not an involution)."""
    for module in estimator.chart.body.modules():
        perm = getattr(module, "_permutation", None)
        if perm is not None and perm.numel() > 2:
            shift = torch.roll(torch.arange(perm.numel()), 1)
            perm.copy_(shift)
            assert not torch.equal(shift[shift], torch.arange(perm.numel()))


def perturbed_estimator(
    model: str,
    data_dim: int,
    manifold_dim: int,
    param_dim: int = 1,
    seed: int = 0,
    scale: float = 0.3,
    dtype: torch.dtype = torch.float64,
    **options,
) -> ManifoldFlowEstimator:
    """An untrained estimator whose weights are moved away from the near-identity init."""
    torch.manual_seed(seed)
    options = {
        "outer_layers": 3,
        "inner_layers": 2,
        "hidden_features": 16,
        "encoder_hidden_features": 16,
        "encoder_blocks": 2,
        **options,
    }
    batch_x = torch.randn(64, data_dim) * torch.linspace(0.5, 2.0, data_dim) + 1.0
    batch_theta = torch.rand(64, param_dim) if param_dim else None
    build = sbi_mflow.manifold_likelihood_nn(model, manifold_dim, **options)
    estimator = build(batch_theta, batch_x)
    cycle_permutations(estimator)
    with torch.no_grad():
        for parameter in estimator.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return estimator.to(dtype).eval()
