"""Benchmark tasks with reference posteriors, on data that lie on a manifold.

A :class:`Task` gives a prior, a simulator, observations 1–5 with ``T`` iid trials each and
reference posterior draws for them, the intrinsic dimension n, and the true chart when one
is known (for FOM, the flow on the prescribed manifold).

* ``lifted_two_moons`` (R^2 → R^32), ``lifted_gaussian_linear`` (R^10 → R^64): sbibm 1.1.0's
  tasks, re-implemented in torch, lifted by the fixed smooth injective map of
  :mod:`benchmarks._sbibm` (posteriors given lifted observations equal the original ones).
  T = 1: sbibm's observations and reference draws. T = 20 (gaussian_linear only): θ_k drawn
  from the prior with seed k, and the closed-form posterior
  N(Σᵢ xᵢ / (T + 1), 0.1 / (T + 1) · I) of prior N(0, 0.1 I) and likelihood N(θ, 0.1 I).
* ``lifted_slcp`` (R^8 → R^48, scale 3): sbibm's SLCP (4 iid 2-D Gaussian draws whose mean,
  scales and correlation θ sets). T = 1: sbibm's observations and references; T = 20: θ_k
  from the prior with seed k, and NUTS on the exact likelihood (:func:`slcp_reference`; the
  draws are committed under ``benchmarks/references/``).
* ``polynomial_surface`` (the paper's Table 2 simulator, R^3, n = 2), T = 20: θ_k drawn from
  the prior with seed k; the simulator's grid reference posterior.
* ``particle_decay`` (R^40, n = 10), T = 1 and 20: θ_k from the prior with seed k; the
  simulator's NUTS reference posterior. No true chart is exposed, so no FOM row.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = ["TASKS", "Task", "slcp", "slcp_log_likelihood", "slcp_pointwise_log_likelihood",
           "slcp_reference", "two_moons", "two_moons_lift"]

NUM_OBSERVATIONS = 5


def two_moons(theta: Tensor) -> Tensor:
    """sbibm 1.1.0's two-moons simulator (same draws in the same order, same float32 maps)."""
    n = theta.shape[0]
    a = torch.distributions.Uniform(-math.pi / 2.0, math.pi / 2.0).sample((n, 1))
    r = torch.distributions.Normal(0.1, 0.01).sample((n, 1))
    p = torch.cat((torch.cos(a) * r + 0.25, torch.sin(a) * r), dim=1)
    angle = torch.tensor([-math.pi / 4.0])
    c, s = torch.cos(angle), torch.sin(angle)
    z0 = (c * theta[:, 0] - s * theta[:, 1]).reshape(-1, 1)
    z1 = (s * theta[:, 0] + c * theta[:, 1]).reshape(-1, 1)
    return p + torch.cat((-torch.abs(z0), z1), dim=1)


def two_moons_lift():
    """The lift of two moons into R^32 (seed fixed: the lift is part of the task)."""
    from benchmarks._sbibm import Lift

    return Lift(2, 32, seed=20240611)


@dataclass
class Task:
    """A simulator with reference posteriors for observations 1–5 at the trial counts in
    ``trials``."""

    name: str
    prior: Distribution
    simulate: Callable[[Tensor], Tensor]
    manifold_dim: int
    trials: tuple[int, ...]
    observe: Callable[[int, int], Tensor]  # (k, T) -> x_o (T, D)
    reference: Callable[[int, int, int], Tensor]  # (k, T, num) -> θ draws (num, p)
    chart: Callable[[], torch.nn.Module] | None = None
    #: log p(x_m | θ_m) up to a θ-free constant: (x (M, D), θ (M, p)) -> (M,).
    log_likelihood: Callable[[Tensor, Tensor], Tensor] | None = None


def _seeded_theta(prior: Distribution, k: int) -> Tensor:
    torch.manual_seed(10_000 + k)
    return prior.sample((1,))


#: Reference draws that take minutes to make, committed with the benchmarks.
REFERENCES = Path(__file__).parent / "references"


def _cached(name: str, draw: Callable[[], Tensor]) -> Tensor:
    """``REFERENCES/<name>.pt``, drawn by ``draw`` and saved when it is not there."""
    path = REFERENCES / f"{name}.pt"
    if path.exists():
        return torch.load(path)
    draws = draw()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    torch.save(draws, partial)
    os.replace(partial, path)  # another process never reads a half-written file
    return draws


def _subsample(reference: Tensor, num: int, k: int) -> Tensor:
    generator = torch.Generator().manual_seed(k)
    return reference[torch.randperm(reference.shape[0], generator=generator)[:num]]


def lifted_two_moons() -> Task:
    from sbi.utils import BoxUniform

    from benchmarks._sbibm import load_task_files

    lift = two_moons_lift()
    prior = BoxUniform(-torch.ones(2), torch.ones(2))

    def observe(k: int, trials: int) -> Tensor:
        return lift(load_task_files("two_moons", k)[0])

    def reference(k: int, trials: int, num: int) -> Tensor:
        return _subsample(load_task_files("two_moons", k)[1], num, k)

    return Task("lifted_two_moons", prior, lambda theta: lift(two_moons(theta)), 2, (1,),
                observe, reference, chart=lift.manifold_chart)


def lifted_gaussian_linear() -> Task:
    from benchmarks._sbibm import Lift, load_task_files

    dim, variance = 10, 0.1
    lift = Lift(dim, 64, seed=20261128, centre=0.0, scale=0.45)
    prior = torch.distributions.MultivariateNormal(torch.zeros(dim), variance * torch.eye(dim))

    def simulate(theta: Tensor) -> Tensor:
        return lift(theta + math.sqrt(variance) * torch.randn_like(theta))

    def observe(k: int, trials: int) -> Tensor:
        if trials == 1:
            return lift(load_task_files("gaussian_linear", k)[0])
        theta = _seeded_theta(prior, k)
        return simulate(theta.expand(trials, dim))

    def reference(k: int, trials: int, num: int) -> Tensor:
        if trials == 1:
            return _subsample(load_task_files("gaussian_linear", k)[1], num, k)
        x = lift.inverse(observe(k, trials)).double()
        mean = x.sum(0) / (trials + 1)
        torch.manual_seed(20_000 + k)
        draws = mean + math.sqrt(variance / (trials + 1)) * torch.randn(num, dim,
                                                                        dtype=torch.float64)
        return draws.float()

    def log_likelihood(x: Tensor, theta: Tensor) -> Tensor:
        u = lift.inverse(x.double())
        return torch.distributions.Normal(theta.double(), math.sqrt(variance)).log_prob(u).sum(-1)

    return Task("lifted_gaussian_linear", prior, simulate, dim, (1, 20), observe, reference,
                chart=lift.manifold_chart, log_likelihood=log_likelihood)


def _slcp_covariance(theta: Tensor) -> Tensor:
    """SLCP's covariance S(θ) (N, 2, 2): standard deviations θ_2², θ_3², correlation tanh θ_4
    (plus sbibm's 1e-6 on the diagonal)."""
    s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, torch.tanh(theta[:, 4])
    return torch.stack([torch.stack([s1**2 + 1e-6, rho * s1 * s2], -1),
                        torch.stack([rho * s1 * s2, s2**2 + 1e-6], -1)], -2)


def slcp(theta: Tensor) -> Tensor:
    """sbibm 1.1.0's SLCP simulator: 4 iid draws of N(m, S) with m = θ_{0,1}, standard
    deviations θ_2², θ_3², correlation tanh θ_4, flattened to (N, 8) in sbibm's order."""
    normal = torch.distributions.MultivariateNormal(theta[:, :2].unsqueeze(1),
                                                    _slcp_covariance(theta).unsqueeze(1))
    return normal.expand((theta.shape[0], 4)).sample().reshape(theta.shape[0], 8)


def _slcp_normal(theta: Tensor) -> torch.distributions.MultivariateNormal:
    """The law N(m, S) of SLCP's 2-D points for each θ (N, 5): batch shape (N,)."""
    return torch.distributions.MultivariateNormal(theta[:, :2], _slcp_covariance(theta))


def slcp_log_likelihood(theta: Tensor, x: Tensor) -> Tensor:
    """log p(x | θ) of SLCP for θ (N, 5) and T trials x (T, 8): the 4T 2-D points are iid
    N(m, S) (:func:`slcp`). Returns (N,)."""
    points = x.reshape(-1, 2).to(theta.dtype)  # (4T, 2)
    return _slcp_normal(theta).log_prob(points.unsqueeze(1)).sum(0)


def slcp_pointwise_log_likelihood(x: Tensor, theta: Tensor) -> Tensor:
    """log p(x_m | θ_m) of SLCP for pairs x (M, 8), θ (M, 5): (M,)."""
    points = x.reshape(-1, 4, 2).transpose(0, 1).to(theta.dtype)  # (4, M, 2)
    return _slcp_normal(theta).log_prob(points).sum(0)


def slcp_reference(x: Tensor, num: int, seed: int) -> Tensor:
    """Draws from SLCP's posterior under the U[-3, 3]⁵ prior given T trials x (T, 8).

    The likelihood depends on θ₂, θ₃ only through θ₂², θ₃², so the posterior is symmetric
    under their sign flips (sbibm's four modes). Pyro NUTS (4 chains) samples the quadrant
    θ₂, θ₃ ≥ 0, and each draw gets independent uniform random signs for θ₂ and θ₃.
    """
    from simulators._posterior import nuts_posterior

    torch.manual_seed(seed)
    x = x.double()
    low = torch.tensor([-3.0, -3.0, 0.0, 0.0, -3.0], dtype=torch.float64)
    high = torch.full((5,), 3.0, dtype=torch.float64)
    draws = nuts_posterior(lambda theta: slcp_log_likelihood(theta, x), low, high, num,
                           warmup_steps=300, num_chains=4)
    signs = torch.where(torch.rand(num, 2, dtype=torch.float64) < 0.5, -1.0, 1.0)
    draws[:, 2:4] *= signs
    return draws.float()


def lifted_slcp() -> Task:
    from sbi.utils import BoxUniform

    from benchmarks._sbibm import Lift, load_task_files

    lift = Lift(8, 48, seed=20261204, centre=0.0, scale=3.0)
    prior = BoxUniform(-3 * torch.ones(5), 3 * torch.ones(5))

    def observe(k: int, trials: int) -> Tensor:
        if trials == 1:
            return lift(load_task_files("slcp", k)[0])
        return lift(slcp(_seeded_theta(prior, k).expand(trials, 5)))

    def reference(k: int, trials: int, num: int) -> Tensor:
        if trials == 1:
            return _subsample(load_task_files("slcp", k)[1], num, k)
        return _cached(f"lifted_slcp-T{trials}-obs{k}-n{num}", lambda: slcp_reference(
            lift.inverse(observe(k, trials)), num, seed=20_000 + k))

    return Task("lifted_slcp", prior, lambda theta: lift(slcp(theta)), 8, (1, 20), observe,
                reference, chart=lift.manifold_chart,
                log_likelihood=lambda x, theta: slcp_pointwise_log_likelihood(
                    lift.inverse(x.double()), theta.double()))


def polynomial_surface() -> Task:
    from simulators import PolynomialSurface

    simulator = PolynomialSurface()

    def observe(k: int, trials: int) -> Tensor:
        theta = _seeded_theta(simulator.prior, k)
        return simulator(theta.expand(trials, -1))

    def reference(k: int, trials: int, num: int) -> Tensor:
        torch.manual_seed(20_000 + k)
        return simulator.reference_posterior(observe(k, trials).double(), num).float()

    return Task("polynomial_surface", simulator.prior, simulator, simulator.manifold_dim, (20,),
                observe, reference, chart=simulator.manifold_chart,
                log_likelihood=simulator.log_likelihood)


def particle_decay() -> Task:
    from simulators import ParticleDecay

    simulator = ParticleDecay()

    def observe(k: int, trials: int) -> Tensor:
        theta = _seeded_theta(simulator.prior, k)
        torch.manual_seed(30_000 + k)
        return simulator(theta.expand(trials, -1))

    def reference(k: int, trials: int, num: int) -> Tensor:
        torch.manual_seed(20_000 + k)
        return simulator.reference_posterior(observe(k, trials).double(), num).float()

    return Task("particle_decay", simulator.prior, simulator, simulator.manifold_dim, (1, 20),
                observe, reference, log_likelihood=simulator.log_likelihood)


TASKS: dict[str, Callable[[], Task]] = {
    "lifted_two_moons": lifted_two_moons,
    "lifted_gaussian_linear": lifted_gaussian_linear,
    "lifted_slcp": lifted_slcp,
    "polynomial_surface": polynomial_surface,
    "particle_decay": particle_decay,
}
