"""One dataclass with every setting of the NUTS posterior sampler.

:class:`NUTSConfig` replaces the options that used to be passed through the posterior's
constructor, ``run``, ``sample`` and the chain runner one keyword at a time. A posterior
holds one; ``posterior.sample(..., num_chains=40)`` samples with
``config.replace(num_chains=40)`` for that call only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["CHAIN_MODES", "METHODS", "NUTSConfig"]

#: "nuts": Pyro's NUTS (trajectory length adapted per transition); "hmc": Pyro's HMC.
METHODS = ("nuts", "hmc")
#: "product": all chains as one Pyro state of the product target (shared step size,
#: trajectory length and accept decision; see :mod:`sbi_mflow.sampling.chains`);
#: "independent": one Pyro kernel per chain (own step size, mass matrix, trajectory and
#: statistics), the chains' potentials evaluated together in one batch per leapfrog step.
CHAIN_MODES = ("product", "independent")


@dataclass(frozen=True)
class NUTSConfig:
    """Settings of Pyro NUTS/HMC chains on a posterior potential.

    Attributes:
        method: "nuts" or "hmc".
        num_chains: chains. Each starts from a draw of sampling-importance-resampling
            (SIR) from ``num_init_candidates`` prior draws, so chains land in the modes of
            a multimodal posterior in proportion to their mass; where NUTS cannot cross
            between modes, the share of draws per mode is quantised to multiples of
            1/num_chains (``ModeDisagreementWarning`` says so): use more chains there.
            10 by default: all chains' potentials are evaluated in one batch, and on the
            demo's posterior a transition of 10 product chains took 1.2–1.6× the leapfrog
            steps of 4 chains' for 2.5× the draws (``benchmarks/nuts_convergence.py``).
        batch_num_chains: chains per observation in ``sample_batched`` (unless the call
            passes ``num_chains``). 4: all observations' chains are one Pyro state whose
            step size shrinks as its dimension grows, so each chain adds leapfrog steps as
            well as rows; on the demo model 200 observations × 1000 draws took 411 s with
            4 chains each (``benchmarks/calibration.py``).
        warmup_steps: adaptation steps per chain (Stan's windowed adaptation in Pyro: dual
            averaging of the step size to ``target_accept_prob``, then a diagonal or dense
            mass matrix); discarded.
        thin: keep every ``thin``-th transition after warm-up (sbi's ``thin``); a chain
            then runs ``thin`` × its kept draws. None (default): the smallest thinning with
            which each chain runs at least ``min_transitions`` transitions
            (:meth:`thin_for`), so a request for few draws still gets chains long enough
            for R̂ and ESS to mean something, and a request for many is not thinned. In
            ``sample_batched`` None means 1: its cost is the number of joint transitions,
            each a leapfrog trajectory over all observations' chains, and calibration
            checks need many observations more than long chains (thinning by 10 would make
            the 411 s of ``benchmarks/calibration.py`` on the demo model several times
            longer; that benchmark checks the unthinned draws with SBC and TARP).
        min_transitions: post-warm-up transitions per chain at least, with ``thin=None``.
            Measured on the demo's posterior (docs/benchmarks.md, convergence at 1000
            draws): a 1-D posterior with a second mode 2 nats above the first, which NUTS
            leaves only when a momentum draw carries that much energy, so a few % of
            transitions cross. At 1000 transitions × 10 chains, 1000 draws gave R̂ ≤ 1.0075
            and bulk ESS ≥ 954 in all 8 runs (20 chains × 50 transitions: R̂ 1.019–1.122).
        target_accept_prob: target of the step-size adaptation.
        max_tree_depth: NUTS's maximal number of trajectory doublings (≤ 2^depth − 1
            leapfrog steps per transition).
        step_size: initial step size (Pyro then finds a reasonable one and adapts it).
        num_steps: HMC's leapfrog steps per transition (unused by NUTS).
        pooled_mass_matrix: product mode: every chain gets the same diagonal mass matrix,
            the mean of the chains' own warm-up variances
            (:class:`~sbi_mflow.sampling.adaptation.PooledMassMatrix`), instead of one
            adapted on its own draws, so a chain that warms up in a narrow mode of a
            multimodal posterior does not set the step size of all chains.
        full_mass: dense instead of diagonal mass matrix (independent chains only: a dense
            matrix over the product space would couple the chains).
        chain_mode: "product" (default) or "independent", see :data:`CHAIN_MODES`. Measured
            (docs/benchmarks.md, nuts): product chains gave 2–2.5× more ESS per second on the 1-D
            PolynomialSurface posterior (Pyro's NUTS mixes poorly on a single 1-D chain),
            independent chains 1.5–2× more on the 3-D ParticleDecay posterior; independent
            chains adapt their own step size and mass matrix and are needed for
            ``full_mass``.
        num_init_candidates: prior draws screened by the potential for SIR starts (at
            least; see ``init_target_ess``).
        init_target_ess: more prior draws are screened (doubling, up to 100 ×
            ``num_init_candidates`` and 2^22 potential rows = candidates × trials) until the
            importance weights' effective sample size
            reaches this: the mode shares of the starts then err by about
            √(a(1−a)/ESS) (0.016 at 1000 for two equal modes) beyond the ±1 chain of
            systematic resampling. Where the ESS stays below it, the starts are resampled
            from tempered weights (:func:`~sbi_mflow.sampling.init.tempering_exponent`;
            ``init_beta`` in the ArviZ attributes): chains then start across all modes
            instead of at the one heaviest draw. 0 screens exactly
            ``num_init_candidates`` and never tempers.
        num_threads: torch intra-op threads while sampling (restored afterwards), None to
            keep torch's setting. The potential's batches are small: on the 2-core
            development machine one thread was several times faster than two.
        sampling_device: where the potential is evaluated: "auto" (the CPU for the chart
            potential, whose n-dimensional inner flow is too small for a GPU to pay off;
            the estimator's device for the exact potential), "cpu", "cuda" or "cuda:k".
        show_progress_bars: one tqdm bar over all chains' transitions.
    """

    method: str = "nuts"
    num_chains: int = 10
    batch_num_chains: int = 4
    warmup_steps: int = 200
    thin: int | None = None
    min_transitions: int = 1000
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    step_size: float = 0.5
    num_steps: int = 10
    pooled_mass_matrix: bool = True
    full_mass: bool = False
    chain_mode: str = "product"
    num_init_candidates: int = 10_000
    init_target_ess: float = 1000.0
    num_threads: int | None = 1
    sampling_device: str = "auto"
    show_progress_bars: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.chain_mode not in CHAIN_MODES:
            raise ValueError(
                f"chain_mode must be one of {CHAIN_MODES}, got {self.chain_mode!r}."
            )
        for name in ("num_chains", "batch_num_chains", "num_init_candidates", "max_tree_depth",
                     "num_steps", "min_transitions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or (
            self.warmup_steps < 0
        ):
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}.")
        if self.thin is not None and (
            isinstance(self.thin, bool) or not isinstance(self.thin, int) or self.thin < 1
        ):
            raise ValueError(f"thin must be an int >= 1 or None, got {self.thin!r}.")
        if self.num_threads is not None and (
            not isinstance(self.num_threads, int) or self.num_threads < 1
        ):
            raise ValueError(f"num_threads must be an int >= 1 or None, got {self.num_threads!r}.")
        if not 0.0 < float(self.target_accept_prob) < 1.0:
            raise ValueError(
                f"target_accept_prob must be in (0, 1), got {self.target_accept_prob!r}."
            )
        if not float(self.init_target_ess) >= 0.0:
            raise ValueError(f"init_target_ess must be >= 0, got {self.init_target_ess!r}.")
        if not float(self.step_size) > 0.0:
            raise ValueError(f"step_size must be > 0, got {self.step_size!r}.")
        if self.full_mass and self.chain_mode == "product" and self.num_chains > 1:
            raise ValueError(
                "full_mass=True needs chain_mode='independent': a dense mass matrix over the "
                "product space would couple the chains."
            )
        device = self.sampling_device
        if not isinstance(device, str) or not (
            device in ("auto", "cpu", "cuda") or device.startswith("cuda:")
        ):
            raise ValueError(
                f"sampling_device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {device!r}."
            )

    def thin_for(self, num_draws: int) -> int:
        """``thin``, or with ``thin=None`` ⌈min_transitions / num_draws⌉ (at least 1)."""
        if self.thin is not None:
            return self.thin
        return max(1, -(-self.min_transitions // num_draws))

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: object) -> NUTSConfig:
        """A copy with ``changes`` applied (validated); unknown names raise ``TypeError``."""
        unknown = sorted(set(changes) - set(self.option_names()))
        if unknown:
            raise TypeError(
                f"Unknown sampler options {unknown}; known: {sorted(self.option_names())}."
            )
        return dataclasses.replace(self, **changes)
