"""Run Pyro NUTS/HMC chains on a batched energy and record every transition.

Two ways to run C chains, both on Pyro's public API (its kernel protocol, ``MCMC`` with
``hook_fn``, ``get_samples(group_by_chain=True)``, ``diagnostics()``, the kernel's
``step_size``, ``inverse_mass_matrix`` and ``mass_matrix_adapter``):

* ``chain_mode="independent"``: one Pyro kernel per chain, so each chain adapts
  its own step size and mass matrix, builds its own trajectories and has its own
  statistics. The chains' potentials are evaluated together, one batched call per leapfrog
  round (:class:`~sbi_mflow.sampling.lockstep.LockstepChains`); each chain is driven by the
  kernel protocol that ``MCMC.run`` uses (``setup``/``sample``/``diagnostics``/``cleanup``,
  the same hook), because ``MCMC.run`` cannot be active for two chains at once.
* ``chain_mode="product"`` (default): the C chains are one Pyro state z = (z_1 … z_C) of the product
  target exp(−Σ_c U(z_c)); each z_c is marginally an exact draw. The chains share the step
  size, the trajectory (number of leapfrog steps, tree depth) and each accept decision;
  each keeps its own diagonal mass-matrix entries. Statistics that differ per chain are
  per chain: ``energy`` and ``lp`` (chain c's own H₀ and U), ``acceptance_rate`` (chain
  c's own energy errors along the shared trajectory) and ``diverging`` (a divergent joint
  trajectory is attributed to the chains whose own energy error crossed Pyro's threshold,
  else to the chain with the largest error: each divergence counts once per chain that
  diverged, never C times). ``step_size``, ``n_steps`` and ``tree_depth`` are shared.

Which gives more ESS per second is measured in ``benchmarks/nuts.py`` (docs/benchmarks.md): the
product state on the 1-D PolynomialSurface posterior, independent chains on the 3-D
ParticleDecay posterior.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import HMC, MCMC, NUTS
from torch import Tensor

from sbi_mflow.sampling.adaptation import PooledMassMatrix
from sbi_mflow.sampling.config import NUTSConfig
from sbi_mflow.sampling.lockstep import LockstepChains
from sbi_mflow.sampling.record import NUTSInfo, RecordingMassMatrix, TransitionRecorder

__all__ = ["ChainResult", "run_chains"]


@dataclass
class ChainResult:
    """Draws and per-transition records of C chains.

    Attributes:
        samples: unconstrained draws z, (num_chains, num_draws, p).
        info: what each kept transition of each chain did (:class:`NUTSInfo`, (C, N)).
        potential_calls: per chain, potential-and-gradient evaluations (warm-up included).
        batched_calls: batched energy calls (each evaluates all running chains).
        wall_time: seconds for all chains.
        chain_mode: "independent" or "product".
        inverse_mass_matrices: per chain, the adapted (diagonal or dense) inverse mass matrix.
        thin: transitions per kept draw.
    """

    samples: Tensor
    info: NUTSInfo
    potential_calls: list[int]
    batched_calls: int
    wall_time: float
    chain_mode: str
    inverse_mass_matrices: list[Tensor] = field(default_factory=list)
    thin: int = 1

    @property
    def stats(self) -> dict[str, np.ndarray]:
        """ArviZ ``sample_stats``: name → (num_chains, num_draws)."""
        return self.info.as_arviz()

    @property
    def num_divergences(self) -> int:
        """Divergent transitions, each chain's counted once."""
        return self.info.num_divergences

    def thinned(self, thin: int) -> ChainResult:
        """Every ``thin``-th draw, the last of each window of ``thin`` transitions; a kept
        draw's record is flagged divergent when any transition of its window diverged."""
        if thin == 1:
            return self
        return dataclasses.replace(
            self, samples=self.samples[:, thin - 1 :: thin].contiguous(),
            info=self.info.thinned(thin), thin=thin,
        )


def _kernel(potential_fn, config: NUTSConfig, recorder: TransitionRecorder, groups: int = 1):
    """Pyro's NUTS or HMC kernel; a product state of several chains with
    ``pooled_mass_matrix`` gets a :class:`PooledMassMatrix` (pooled within each of the
    ``groups`` blocks of chains)."""
    common = dict(
        potential_fn=potential_fn, step_size=config.step_size, adapt_step_size=True,
        adapt_mass_matrix=True, full_mass=config.full_mass,
        target_accept_prob=config.target_accept_prob,
    )
    if config.method == "nuts":
        kernel = NUTS(max_tree_depth=config.max_tree_depth, **common)
    else:
        kernel = HMC(num_steps=config.num_steps, **common)
    if config.pooled_mass_matrix and recorder.num_chains > 1:
        kernel.mass_matrix_adapter = PooledMassMatrix(recorder, recorder.num_chains, groups)
    else:
        kernel.mass_matrix_adapter = RecordingMassMatrix(recorder)
    return kernel


def _mcmc(kernel, init: Tensor, num_draws: int, config: NUTSConfig, hook) -> MCMC:
    return MCMC(
        kernel, num_samples=num_draws, warmup_steps=config.warmup_steps,
        initial_params={"theta": init.detach().clone()}, num_chains=1,
        hook_fn=hook, disable_progbar=True,
    )


def _progress(config: NUTSConfig, total: int):
    if not config.show_progress_bars:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="NUTS transitions (all chains)", unit="step")


def run_chains(
    energy: Callable[[Tensor], Tensor],
    inits: Tensor,
    num_draws: int,
    config: NUTSConfig | None = None,
    groups: int = 1,
    **overrides: object,
) -> ChainResult:
    """Sample exp(−U(z)) with Pyro NUTS or HMC, one chain per row of ``inits``.

    Args:
        energy: batched energy U: z (B, p) -> (B,), differentiable in z (float64 z in,
            values in z's dtype out).
        inits: starting points (num_chains, p) in the unconstrained space; their dtype is
            the sampler's (float64 recommended).
        num_draws: kept draws per chain (each chain runs ``config.thin_for(num_draws)`` ×
            as many transitions after warm-up).
        config: sampler settings (default :class:`NUTSConfig`); ``num_chains`` is taken
            from ``inits``.
        groups: the chains are ``groups`` consecutive blocks of equal size, one per target
            (e.g. one per observation of a batched posterior): a pooled mass matrix pools
            within each block only.
        overrides: changes to ``config`` for this call (e.g. ``warmup_steps=100``).
    """
    config = (config or NUTSConfig()).replace(**overrides)
    if inits.dim() != 2 or inits.shape[0] < 1:
        raise ValueError(f"inits must have shape (num_chains, p), got {tuple(inits.shape)}.")
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws must be an int >= 1, got {num_draws!r}.")
    config = config.replace(num_chains=inits.shape[0])
    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    start = time.perf_counter()
    try:
        # Pyro switches distribution validation off and on inside MCMC.run and during
        # warm-up; keep it off for the whole run and restore the caller's setting after.
        with pyro.validation_enabled(False):
            run = (_run_product if config.chain_mode == "product" and inits.shape[0] > 1
                   else _run_independent)
            thin = config.thin_for(num_draws)
            result = run(energy, inits, num_draws * thin, config, groups).thinned(thin)
    finally:
        torch.set_num_threads(previous_threads)
    result.wall_time = time.perf_counter() - start
    return result


def _drive(kernel, init: Tensor, warmup_steps: int, num_draws: int, hook) -> tuple[Tensor, dict]:
    """One chain through Pyro's public kernel protocol, as ``MCMC.run`` does for one chain:
    ``setup``, ``sample`` per transition (then ``hook(kernel, params, stage, i)`` as
    ``MCMC(hook_fn=...)`` calls it), ``diagnostics``, ``cleanup``. Returns the draws
    (num_draws, *init.shape) and the kernel's diagnostics."""
    kernel.initial_params = {"theta": init.detach().clone()}
    kernel.setup(warmup_steps)
    params = kernel.initial_params
    for i in range(warmup_steps):
        params = kernel.sample(params)
        hook(kernel, params, "Warmup", i)
    draws = []
    for i in range(num_draws):
        params = kernel.sample(params)
        hook(kernel, params, "Sample", i)
        draws.append(params["theta"].detach().clone())
    diagnostics = kernel.diagnostics()
    kernel.cleanup()
    return torch.stack(draws), diagnostics


def _run_independent(energy, inits: Tensor, num_draws: int, config: NUTSConfig,
                     groups: int = 1) -> ChainResult:
    num_chains = inits.shape[0]
    lockstep = LockstepChains(energy, num_chains, full_batch=groups > 1)
    progress = _progress(config, num_chains * (config.warmup_steps + num_draws))
    recorders, kernels, outputs = [], [], [None] * num_chains

    def driver(chain: int, kernel, recorder: TransitionRecorder):
        def hook(kernel, params, stage, index):
            recorder.hook(kernel, params, stage, index)
            if progress is not None:
                progress.update(1)

        def run() -> None:
            outputs[chain] = _drive(kernel, inits[chain], config.warmup_steps, num_draws, hook)

        return run

    runs = []
    for chain in range(num_chains):
        recorder = TransitionRecorder(1, is_nuts=config.method == "nuts")
        kernel = _kernel(lockstep.potential_fn(chain, recorder.on_potential), config, recorder)
        recorders.append(recorder)
        kernels.append(kernel)
        runs.append(driver(chain, kernel, recorder))
    try:
        # chains' sample sites stay inside the sampler, as in MCMC.run
        with poutine.block():
            lockstep.run(runs)
    finally:
        if progress is not None:
            progress.close()
    for chain, (_, diagnostics) in enumerate(outputs):
        divergent = recorders[chain].info().divergent[0].nonzero().flatten().tolist()
        if divergent != list(diagnostics["divergences"]):
            raise RuntimeError(  # the record must agree with Pyro's own divergence list
                f"chain {chain}: recorded divergences {divergent} differ from Pyro's "
                f"{diagnostics['divergences']}."
            )
    return ChainResult(
        samples=torch.stack([draws for draws, _ in outputs]),
        info=NUTSInfo.concatenate([r.info() for r in recorders]),
        potential_calls=[r.potential_calls for r in recorders],
        batched_calls=lockstep.batched_calls,
        wall_time=0.0,
        chain_mode="independent",
        inverse_mass_matrices=[_inverse_mass(k) for k in kernels],
    )


def _inverse_mass(kernel) -> Tensor:
    (matrix,) = kernel.inverse_mass_matrix.values()
    return matrix.detach().clone()


def _run_product(energy, inits: Tensor, num_draws: int, config: NUTSConfig,
                 groups: int = 1) -> ChainResult:
    num_chains, p = inits.shape
    recorder = TransitionRecorder(num_chains, is_nuts=config.method == "nuts")
    progress = _progress(config, config.warmup_steps + num_draws)

    def potential(params: dict[str, Tensor]) -> Tensor:
        z = params["theta"]
        values = energy(z).to(z.dtype)
        recorder.on_potential(z, values)
        return values.sum()

    def hook(kernel, params, stage, index):
        recorder.hook(kernel, params, stage, index)
        if progress is not None:
            progress.update(1)

    kernel = _kernel(potential, config, recorder, groups)
    mcmc = _mcmc(kernel, inits, num_draws, config, hook)
    try:
        mcmc.run()
    finally:
        if progress is not None:
            progress.close()
    draws = mcmc.get_samples(group_by_chain=True)["theta"][0]  # (N, C, p)
    inverse_mass = _inverse_mass(kernel).reshape(num_chains, p)
    return ChainResult(
        samples=draws.transpose(0, 1).contiguous().detach(),
        info=recorder.info(),
        potential_calls=[recorder.potential_calls] * num_chains,
        batched_calls=recorder.potential_calls,
        wall_time=0.0,
        chain_mode="product",
        inverse_mass_matrices=list(inverse_mass),
    )
