"""Priors on the device where they are used.

sbi asserts that the prior samples on the training device ("Prior device 'cpu' must match
training device 'cuda:0'"), and a posterior sampled on the CPU needs a CPU prior. Users
build priors on the CPU (the simulators' priors, ``BoxUniform(low, high)``), so
:func:`prior_on_device` rebuilds a prior from its parameters on another device, for the
distributions sbi accepts: ``BoxUniform``, ``MultipleIndependent``, ``Independent``, and
torch distributions whose constructor arguments are stored tensors (``Normal``,
``MultivariateNormal``, ``Gamma``, ``LogNormal``, ``Uniform``, …). Anything else, such as a
user prior wrapped by sbi's ``process_prior``, gets one clear error saying how to build it
on the device.
"""

from __future__ import annotations

import torch
from sbi.utils import BoxUniform, MultipleIndependent
from torch.distributions import Distribution, Independent

__all__ = ["prior_device", "prior_on_device"]


def prior_device(prior: Distribution) -> torch.device:
    """The device of the prior's samples (how sbi determines it)."""
    return prior.sample((1,)).device


def _constructor_parameters(prior: Distribution) -> dict[str, torch.Tensor] | None:
    """Constructor arguments of a parametrised torch distribution, or None.

    Those stored on the instance (``MultivariateNormal`` stores only the one it was given);
    else every entry of ``arg_constraints`` (``LogNormal`` exposes loc and scale as
    properties of its base distribution).
    """
    names = getattr(prior, "arg_constraints", {})
    values = {k: v for k, v in vars(prior).items() if k in names}
    if not values:
        values = {k: getattr(prior, k, None) for k in names}
    if not values or not all(isinstance(v, torch.Tensor) for v in values.values()):
        return None
    return values


def _rebuild(prior: Distribution, device: torch.device) -> Distribution | None:
    if isinstance(prior, BoxUniform):
        base = prior.base_dist
        return BoxUniform(base.low.to(device), base.high.to(device),
                          reinterpreted_batch_ndims=prior.reinterpreted_batch_ndims,
                          device=str(device))
    if isinstance(prior, MultipleIndependent):
        parts = [_rebuild(d, device) for d in prior.dists]
        if any(p is None for p in parts):
            return None
        return MultipleIndependent(parts, validate_args=False, device=str(device))
    if isinstance(prior, Independent):
        base = _rebuild(prior.base_dist, device)
        return None if base is None else Independent(base, prior.reinterpreted_batch_ndims)
    parameters = _constructor_parameters(prior)
    if parameters is None:
        return None
    try:
        return type(prior)(**{k: v.to(device) for k, v in parameters.items()},
                           validate_args=False)
    except (TypeError, ValueError):
        return None


def prior_on_device(prior: Distribution, device: str | torch.device) -> Distribution:
    """The same prior, sampling on ``device`` (the prior itself when it already does).

    Raises:
        ValueError: the prior cannot be rebuilt on ``device``; the message says how to
            build it there.
    """
    device = torch.zeros(0, device=device).device  # "cuda" -> "cuda:0"
    if prior_device(prior) == device:
        return prior
    moved = _rebuild(prior, device)
    if moved is None or prior_device(moved) != device:
        raise ValueError(
            f"The prior ({type(prior).__name__}) samples on {prior_device(prior)} but the "
            f"device is {device}, and sbi-mflow cannot rebuild this prior there. Build it "
            f"on the device, e.g. BoxUniform(low, high, device='{device}') or a torch "
            "distribution with parameters on that device."
        )
    return moved
