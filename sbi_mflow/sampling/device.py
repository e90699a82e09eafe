"""Where the posterior potential runs, and the map between θ's support and R^p."""

from __future__ import annotations

import torch
from sbi.utils import mcmc_transform
from torch import Tensor, nn
from torch.distributions import Distribution, biject_to, constraints
from torch.distributions.transforms import IndependentTransform

from sbi_mflow.sampling.potential import estimator_device_dtype

__all__ = ["resolve_sampling_device", "unconstraining_transform"]


def resolve_sampling_device(
    sampling_device: str, estimator: nn.Module, chart: bool
) -> torch.device:
    """Where the posterior potential is evaluated.

    "auto": the CPU for the chart potential (``chart=True``) — an n-dimensional inner flow
    on a few cached encodings per step, so a GPU spends its time launching tiny kernels (on
    an H200, 1000 draws took 153 s against 18.8 s on one CPU thread) — and the estimator's
    device for a potential that runs the whole likelihood at every step.

    Raises:
        ValueError: a CUDA device is asked for but CUDA is not available.
    """
    if sampling_device == "auto":
        return torch.device("cpu") if chart else estimator_device_dtype(estimator)[0]
    device = torch.device(sampling_device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"sampling_device={sampling_device!r} but CUDA is not available; use 'cpu' or "
            "'auto'."
        )
    return torch.zeros(0, device=device).device  # "cuda" -> "cuda:0"


def unconstraining_transform(prior: Distribution, device: torch.device | str):
    """sbi's ``mcmc_transform`` (θ = T⁻¹(z): the prior's support ↔ R^p, z-scored when
    unbounded), also for box supports whose bounds have another dtype than the prior's
    samples (sbi's ``process_prior`` wraps a float64 user prior to return float32 draws but
    keeps the user's float64 bounds, which sbi's own round-trip check rejects)."""
    try:
        return mcmc_transform(prior, device=device)
    except (RuntimeError, AssertionError):
        support = prior.support
        base = getattr(support, "base_constraint", support)
        lower, upper = getattr(base, "lower_bound", None), getattr(base, "upper_bound", None)
        if not (isinstance(lower, Tensor) and isinstance(upper, Tensor)):
            raise
        dtype = prior.sample((1,)).dtype
        box = constraints.interval(lower.to(device, dtype), upper.to(device, dtype))
        transform = biject_to(box)
        return IndependentTransform(transform, reinterpreted_batch_ndims=1).inv
