"""The maximum a posteriori θ by L-BFGS in the unconstrained space of the prior's support."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sbi_mflow.sampling.init import SCREENING_ROWS

__all__ = ["find_map", "log_posterior"]


def log_posterior(potential, theta: Tensor) -> Tensor:
    """The potential (unnormalised log posterior) of many θ (M, p) → (M,), for the one set
    observation, in chunks, without gradients."""
    chunk = max(1, SCREENING_ROWS // potential.num_trials)
    with torch.no_grad():
        return torch.cat([
            potential(part, track_gradients=False).detach() for part in theta.split(chunk)
        ])


def find_map(potential, theta_transform, inits: Tensor, num_to_optimize: int = 10,
             num_iter: int = 100, learning_rate: float = 1.0) -> Tensor:
    """argmax_θ log π(θ) + Σ_t log q(x_o,t | θ) (p,) for the potential's observation.

    L-BFGS (torch.optim, strong Wolfe line search) in float64 on z = T(θ), maximising the
    density of θ at θ = T⁻¹(z) (no Jacobian term), from the ``num_to_optimize`` most
    probable of ``inits`` (M, p), each for at most ``num_iter`` iterations with initial
    step ``learning_rate``; the best end point wins.

    Raises:
        RuntimeError: the potential is not finite at any start.
    """
    order = torch.argsort(log_posterior(potential, inits), descending=True)
    best_theta, best_value = None, -math.inf
    for start in inits[order[: min(num_to_optimize, inits.shape[0])]]:
        theta, value = _maximise(potential, theta_transform, start, num_iter, learning_rate)
        if value > best_value:
            best_theta, best_value = theta, value
    if best_theta is None:
        raise RuntimeError("MAP search failed: the potential is not finite at any start.")
    return best_theta


def _maximise(potential, theta_transform, theta: Tensor, num_iter: int,
              learning_rate: float) -> tuple[Tensor, float]:
    """L-BFGS from one θ; returns (θ*, log posterior at θ*)."""
    z = theta_transform(theta.unsqueeze(0)).to(torch.float64).detach()
    if not bool(torch.isfinite(z).all()):
        return theta, -math.inf
    z.requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        [z], lr=learning_rate, max_iter=num_iter, line_search_fn="strong_wolfe",
        tolerance_grad=1e-10, tolerance_change=1e-14, history_size=20,
    )

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = -potential(theta_transform.inv(z), track_gradients=True)
        loss = loss.to(torch.float64).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        theta = theta_transform.inv(z.detach())[0]
        value = float(potential(theta.unsqueeze(0), track_gradients=False)[0])
    return theta, value if math.isfinite(value) else -math.inf
