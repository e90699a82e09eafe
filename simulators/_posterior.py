"""Reference-posterior samplers on a box prior: a grid sampler and Pyro NUTS.

Both take ``log_lik(theta) -> (M,)``: the summed log-likelihood of all iid observations for a
batch of parameters ``theta (M, p)`` (float64) and a uniform prior on ``[low, high]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["grid_posterior", "nuts_posterior"]

LogLik = Callable[[Tensor], Tensor]


def _check_num_samples(num_samples: int) -> None:
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")


def grid_posterior(
    log_lik: LogLik,
    low: Tensor,
    high: Tensor,
    num_samples: int,
    points_per_dim: int,
    chunk: int = 65536,
) -> Tensor:
    """Sample a posterior on a regular grid (cell midpoints) with uniform jitter in the cell.

    The box ``[low, high]`` (shape ``(p,)``) is split into ``points_per_dim**p`` equal cells; the
    posterior mass of a cell is ``∝ exp(log_lik(midpoint))``; a cell is drawn by inverse CDF
    (``torch.multinomial``, global RNG) and the sample is uniform inside it. Exact up to the
    variation of the likelihood within one cell. Returns ``(num_samples, p)`` float64.
    """
    _check_num_samples(num_samples)
    p = low.numel()
    device = low.device
    width = (high - low) / points_per_dim
    axes = [
        low[i] + width[i] * (torch.arange(points_per_dim, dtype=torch.float64, device=device) + 0.5)
        for i in range(p)
    ]
    grid = torch.cartesian_prod(*axes).reshape(-1, p)
    logp = torch.cat([log_lik(g) for g in grid.split(chunk)])
    if not torch.isfinite(logp).any():
        raise ValueError("The likelihood is zero on the whole parameter grid.")
    w = torch.exp(logp - logp.max()).cpu()
    idx = torch.multinomial(w, num_samples, replacement=True).to(device)
    jitter = torch.rand(num_samples, p, dtype=torch.float64).to(device) - 0.5
    return grid[idx] + jitter * width


def nuts_posterior(
    log_lik: LogLik,
    low: Tensor,
    high: Tensor,
    num_samples: int,
    warmup_steps: int = 300,
    num_chains: int = 1,
    thin: int = 1,
) -> Tensor:
    """Sample the posterior with Pyro NUTS (uniform prior on ``[low, high]``).

    Pyro runs in the unconstrained space of the box (logit transform). Chains run one after
    the other on the current process; seeding is through torch's global RNG (``pyro`` uses it).
    Returns ``(num_samples, p)`` float64 on ``low``'s device.
    """
    _check_num_samples(num_samples)
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC, NUTS

    def model() -> None:
        theta = pyro.sample("theta", dist.Uniform(low, high).to_event(1))
        pyro.factor("log_lik", log_lik(theta.reshape(1, -1)).sum())

    per_chain = -(-num_samples // num_chains)
    draws = []
    for _ in range(num_chains):
        mcmc = MCMC(
            NUTS(model, adapt_step_size=True, target_accept_prob=0.8),
            num_samples=per_chain * thin,
            warmup_steps=warmup_steps,
            disable_progbar=True,
        )
        mcmc.run()
        draws.append(mcmc.get_samples()["theta"][::thin])
    return torch.cat(draws)[:num_samples].to(torch.float64)
