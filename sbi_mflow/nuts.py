"""Run Pyro NUTS / HMC chains on a potential, recording per-draw sampler statistics.

Chains run one after another in this process (one ``pyro.infer.MCMC`` per chain). On the
2-core development machine Pyro's multi-process chains were slower than sequential ones
(process start-up and unpickling the estimator dominate for these cheap potentials), and
Pyro's MCMC cannot vectorise chains; the chart potential's cost per step is a single small
inner-flow pass, so sequential chains are the simple, robust choice.

Each transition records, for the ArviZ ``sample_stats`` group:

* ``diverging``: the transition diverged (after warm-up);
* ``step_size``: the leapfrog step size used;
* ``n_steps``: leapfrog steps (potential + gradient evaluations) of the transition;
* ``tree_depth`` (NUTS): number of trajectory doublings, ⌈log2(n_steps + 1)⌉;
* ``acceptance_rate``: NUTS' mean Metropolis acceptance over the trajectory (HMC: the
  acceptance probability of the proposal);
* ``energy``: the Hamiltonian at the start of the transition, U(z) + ½ rᵀM⁻¹r with fresh
  momentum (H is nearly conserved along the trajectory, so this is ArviZ's ``energy`` for
  E-BFMI up to integration error);
* ``lp``: −U(z) of the draw, the log density in the unconstrained space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from pyro.infer import HMC, MCMC, NUTS
from torch import Tensor

__all__ = ["ChainResult", "CountingEnergy", "run_chains"]

STAT_NAMES = (
    "diverging", "step_size", "n_steps", "tree_depth", "acceptance_rate", "energy", "lp",
)  # fmt: skip


class CountingEnergy:
    """Pyro potential ``{"theta": z (p,)} -> U(z)`` (a scalar) that counts its calls.

    ``energy(z (C, p)) -> (C,)`` is the batched energy in the unconstrained space.
    """

    def __init__(self, energy: Callable[[Tensor], Tensor]) -> None:
        self.energy = energy
        self.calls = 0

    def __call__(self, params: dict[str, Tensor]) -> Tensor:
        self.calls += 1
        return self.energy(params["theta"].unsqueeze(0)).squeeze(0)


class _StatsMixin:
    """Records :data:`STAT_NAMES` after every ``sample`` call of a Pyro HMC/NUTS kernel."""

    _is_nuts = False

    def _init_stats(self, counter: CountingEnergy) -> None:
        self._counter = counter
        self.stats: dict[str, list[float]] = {name: [] for name in STAT_NAMES}
        self._pending_energy = False
        self._start_energy = math.nan

    def _kinetic_energy(self, r_unscaled):  # noqa: D401 - pyro override
        kinetic = super()._kinetic_energy(r_unscaled)
        if self._pending_energy:
            self._pending_energy = False
            potential = self._potential_energy_last
            self._start_energy = float(kinetic + potential)
        return kinetic

    def sample(self, params):
        t_before = self._t
        calls = self._counter.calls
        divergences = len(self._divergences)
        mean_accept = self._mean_accept_prob
        step_size = float(self.step_size)
        self._pending_energy = True
        out = super().sample(params)
        if t_before < self._warmup_steps:
            return out  # keep statistics of the kept draws only
        n = self._t - self._warmup_steps
        n_steps = self._counter.calls - calls
        accept = mean_accept + n * (self._mean_accept_prob - mean_accept)
        self.stats["diverging"].append(float(len(self._divergences) > divergences))
        self.stats["step_size"].append(step_size)
        self.stats["n_steps"].append(float(n_steps))
        depth = math.ceil(math.log2(n_steps + 1)) if self._is_nuts else math.nan
        self.stats["tree_depth"].append(float(depth))
        self.stats["acceptance_rate"].append(float(min(max(accept, 0.0), 1.0)))
        self.stats["energy"].append(self._start_energy)
        self.stats["lp"].append(-float(self._potential_energy_last))
        return out


class _RecordingNUTS(_StatsMixin, NUTS):
    _is_nuts = True


class _RecordingHMC(_StatsMixin, HMC):
    pass


@dataclass
class ChainResult:
    """Draws and statistics of several chains.

    Attributes:
        samples: unconstrained draws z, (num_chains, num_draws, p).
        stats: :data:`STAT_NAMES` → arrays (num_chains, num_draws).
        potential_calls: potential+gradient evaluations per chain (warm-up included).
        wall_time: seconds per chain.
    """

    samples: Tensor
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    potential_calls: list[int] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)

    @property
    def num_divergences(self) -> int:
        return int(self.stats["diverging"].sum())


def run_chains(
    energy: Callable[[Tensor], Tensor],
    inits: Tensor,
    num_draws: int,
    warmup_steps: int = 200,
    method: str = "nuts",
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    step_size: float = 0.5,
    num_steps: int = 10,
    full_mass: bool = False,
    show_progress_bars: bool = False,
    num_threads: int | None = 1,
) -> ChainResult:
    """Sample ``exp(−U(z))`` with Pyro NUTS (or HMC), one chain per row of ``inits``.

    Warm-up adapts the step size (dual averaging to ``target_accept_prob``) and a diagonal
    (or dense, ``full_mass=True``) mass matrix.

    Args:
        energy: batched energy U: z (C, p) -> (C,), differentiable in z.
        inits: starting points (num_chains, p) in the unconstrained space.
        num_draws: kept draws per chain.
        warmup_steps: adaptation steps per chain (discarded).
        method: "nuts" or "hmc" (``step_size`` and ``num_steps`` are HMC's initial step size
            and fixed trajectory length; NUTS adapts the trajectory length itself).
        num_threads: torch intra-op threads while sampling (restored afterwards); None
            keeps the current setting. One chain evaluates a small batch (num_trials rows),
            where threading only adds overhead: on the shared 2-core development machine one
            energy + gradient call took 8.9 ms with 1 thread and 97 ms with 2.
    """
    if method not in ("nuts", "hmc"):
        raise ValueError(f"method must be 'nuts' or 'hmc', got {method!r}.")
    if num_draws < 1 or warmup_steps < 0:
        raise ValueError(
            f"num_draws must be >= 1 and warmup_steps >= 0, got {num_draws}, {warmup_steps}."
        )
    if inits.dim() != 2:
        raise ValueError(f"inits must have shape (num_chains, p), got {tuple(inits.shape)}.")
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _run(
            energy, inits, num_draws, warmup_steps, method, target_accept_prob,
            max_tree_depth, step_size, num_steps, full_mass, show_progress_bars,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    energy, inits, num_draws, warmup_steps, method, target_accept_prob, max_tree_depth,
    step_size, num_steps, full_mass, show_progress_bars,
) -> ChainResult:
    import time

    all_samples, all_stats, calls, times = [], [], [], []
    for chain in range(inits.shape[0]):
        counter = CountingEnergy(energy)
        if method == "nuts":
            kernel = _RecordingNUTS(
                potential_fn=counter, target_accept_prob=target_accept_prob,
                max_tree_depth=max_tree_depth, step_size=step_size, adapt_step_size=True,
                adapt_mass_matrix=True, full_mass=full_mass,
            )
        else:
            kernel = _RecordingHMC(
                potential_fn=counter, target_accept_prob=target_accept_prob,
                step_size=step_size, num_steps=num_steps, adapt_step_size=True,
                adapt_mass_matrix=True, full_mass=full_mass,
            )
        kernel._init_stats(counter)
        mcmc = MCMC(
            kernel, num_samples=num_draws, warmup_steps=warmup_steps,
            initial_params={"theta": inits[chain].detach().clone()}, num_chains=1,
            disable_progbar=not show_progress_bars,
        )
        start = time.perf_counter()
        mcmc.run()
        times.append(time.perf_counter() - start)
        all_samples.append(mcmc.get_samples()["theta"].detach())
        all_stats.append({k: np.asarray(v, dtype=float) for k, v in kernel.stats.items()})
        calls.append(counter.calls)
    stats = {k: np.stack([s[k] for s in all_stats]) for k in STAT_NAMES}
    return ChainResult(torch.stack(all_samples), stats, calls, times)
