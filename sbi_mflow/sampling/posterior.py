"""NUTS posterior p(θ | x) ∝ π(θ) Π_t q(x_t | θ) for any sbi likelihood estimator q.

:class:`NUTSPosterior` follows sbi's ``NeuralPosterior`` contract (``sample``,
``sample_batched``, ``log_prob``, ``log_prob_batched`` up to a constant, ``set_default_x``,
``map``, ``potential``) and adds :meth:`~NUTSPosterior.sample_arviz`. It composes:

1. a potential (:mod:`~sbi_mflow.sampling.potential`) holding B observations (B, T, d);
2. chain starts by sampling-importance-resampling from the prior
   (:func:`~sbi_mflow.sampling.init.sir_starts`), C per observation;
3. Pyro NUTS (or HMC) in the unconstrained space z = T(θ) of the prior's support
   (:mod:`~sbi_mflow.sampling.device`) on the energy
   U(z) = −log π(θ) − Σ_t log q(x_t | θ) − log|det ∂θ/∂z|, θ = T⁻¹(z), in float64, run by
   :func:`~sbi_mflow.sampling.chains.run_chains` for all B·C chains at once;
4. R̂ / ESS / divergence checks per observation (:mod:`~sbi_mflow.sampling.convergence`).

``sample`` and ``sample_batched`` stay in torch; ArviZ data are built by ``sample_arviz``
only. The settings are one :class:`~sbi_mflow.sampling.config.NUTSConfig`.

Batched observations (``sample_batched``): every observation has its own C chains, SIR
starts, diagonal mass matrix (adapted on its own chains' warm-up draws) and diagnostics. In
the default product mode all B·C chains are one Pyro state: the step size, the number of
leapfrog steps and each accept decision are shared by all chains of all observations (each
draw is still exact for its own posterior). ``chain_mode="independent"`` gives every chain
its own step size and trajectory, evaluated together one batch per leapfrog round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from sbi.inference.posteriors.base_posterior import NeuralPosterior
from torch import Tensor

from sbi_mflow.sampling.arviz_data import default_param_names, to_inference_data
from sbi_mflow.sampling.chains import ChainResult, run_chains
from sbi_mflow.sampling.config import NUTSConfig
from sbi_mflow.sampling.convergence import ConvergenceSummary, check_batch, check_draws
from sbi_mflow.sampling.device import resolve_sampling_device, unconstraining_transform
from sbi_mflow.sampling.init import sir_starts
from sbi_mflow.sampling.map import find_map
from sbi_mflow.sampling.potential import (
    ExactLikelihoodPotential,
    estimator_device_dtype,
    manifold_potential,
)

__all__ = ["NUTSPosterior", "nuts_posterior"]


class NUTSPosterior(NeuralPosterior):
    """Posterior over θ sampled with Pyro NUTS on a likelihood potential.

    Args:
        potential: the potential (:class:`~sbi_mflow.sampling.potential.
            ExactLikelihoodPotential` or :class:`~sbi_mflow.sampling.potential.
            ChartPotential`); its device is where sampling runs.
        config: sampler settings (default :class:`NUTSConfig`).
        param_names: names of θ's components for ArviZ (default ``theta_0 …``).
        check_convergence: warn on R̂ > 1.01, low bulk ESS, divergences or chains in
            different modes after sampling.
        x_o: optional default observations (num_trials, d).
        user_device: where draws and densities are returned (default: the potential's).
        options: :class:`NUTSConfig` fields overriding ``config`` (``num_chains=40`` …).
    """

    def __init__(
        self,
        potential: ExactLikelihoodPotential,
        config: NUTSConfig | None = None,
        *,
        param_names: Sequence[str] | None = None,
        check_convergence: bool = True,
        x_o: Tensor | None = None,
        user_device: torch.device | str | None = None,
        **options: Any,
    ) -> None:
        if potential.prior is None:
            raise ValueError("A prior is needed to build the posterior.")
        self.config = (config or NUTSConfig()).replace(**options)
        theta_transform = unconstraining_transform(potential.prior, potential.device)
        super().__init__(potential, theta_transform=theta_transform, device=potential.device)
        self.potential_fn: ExactLikelihoodPotential = potential
        self.prior = potential.prior
        self.proposal = self.prior
        self.prior_dtype = potential.prior_dtype
        self.user_device = torch.device(user_device or potential.device)
        p = potential.param_dim
        self.param_names = list(param_names) if param_names is not None else (
            default_param_names(p)
        )
        if len(self.param_names) != p:
            raise ValueError(f"param_names must have {p} entries, got {self.param_names}.")
        self.check_convergence = check_convergence
        self.inference_data = None  # the last sample_arviz's
        self.chain_result: ChainResult | None = None  # the last run's B·C chains
        self.convergence: list[ConvergenceSummary] = []  # the last run's, per observation
        self.init_summary: dict[str, float] = {}
        self._last_settings = self.config
        self._purpose = (
            f"Sampled with Pyro {self.config.method.upper()} on the "
            f"{type(potential).__name__} on {potential.device}."
        )
        if x_o is not None:
            self.set_default_x(x_o)

    @property
    def sampling_device(self) -> torch.device:
        """The device the potential is evaluated on."""
        return torch.device(self.potential_fn.device)

    def _settings(self, options: dict[str, Any]) -> NUTSConfig:
        settings = self.config.replace(**options)
        if settings.sampling_device != self.config.sampling_device:
            raise ValueError(
                "sampling_device is fixed when the posterior is built: pass it to "
                "manifold_posterior(..., sampling_device=...) instead."
            )
        return settings

    # ------------------------------------------------------------------- x handling
    def set_default_x(self, x: Tensor) -> NUTSPosterior:
        """Set the default observations x_o (num_trials, d) (iid trials as rows)."""
        self._x = self.potential_fn.check_x(x)
        self._map = None
        return self

    def _observe(self, x: Tensor | None, batched: bool = False) -> Tensor:
        """Validate x (one observation, or B of them with ``batched``), set it on the
        potential, run :meth:`_on_observations`; returns it as (B, T, d)."""
        if x is None:
            if batched or self.default_x is None:
                raise ValueError(
                    "Observations x are needed: pass x=... or call .set_default_x(x_o) first."
                )
            x = self.default_x
        x_batch = self.potential_fn.check_x(x, batched=batched)
        x_batch = x_batch if batched else x_batch.unsqueeze(0)
        self.potential_fn.set_x_batch(x_batch)
        self._on_observations(x_batch)
        return x_batch

    def _on_observations(self, x_batch: Tensor) -> None:
        """Hook: new observations (B, T, d) are set (e.g. check them)."""

    def _to_user(self, theta: Tensor) -> Tensor:
        return theta.to(self.user_device, self.prior_dtype)

    # --------------------------------------------------------------------- sampling
    def _energy(self, num_obs: int):
        """U(z) for z (B·C, p), observation b's chains in rows b·C … (b+1)·C − 1."""

        def energy(z: Tensor) -> Tensor:
            theta = self.theta_transform.inv(z)
            log_det = self.theta_transform.inv.log_abs_det_jacobian(z, theta)
            values = self.potential_fn.batched(
                theta.reshape(num_obs, -1, theta.shape[-1]), track_gradients=True
            ).reshape(-1)
            return -(values + log_det).to(z.dtype)

        return energy

    def _run(self, num_samples: int, x_batch_given: Tensor | None, batched: bool,
             seed: int | None, show_progress_bars: bool | None,
             options: dict[str, Any]) -> Tensor:
        """Sample every observation's posterior; draws θ (B, C, N, p) on the sampling
        device, N = ⌈num_samples / C⌉ per chain."""
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
        if show_progress_bars is not None:
            options["show_progress_bars"] = show_progress_bars
        settings = self._settings(options)
        if batched:  # NUTSConfig.batch_num_chains and .thin: why batched runs differ
            settings = settings.replace(
                num_chains=options.get("num_chains", settings.batch_num_chains),
                thin=1 if settings.thin is None else settings.thin,
            )
        self._last_settings = settings
        x_batch = self._observe(x_batch_given, batched=batched)
        if seed is not None:
            import pyro

            pyro.set_rng_seed(seed)
        num_obs, num_chains = x_batch.shape[0], settings.num_chains
        starts = sir_starts(self.potential_fn, self.prior, self.theta_transform, num_chains,
                            settings.num_init_candidates, settings.init_target_ess)
        self.init_summary = {"init_candidates": starts.num_candidates,
                             "init_ess": float(starts.ess.min()),
                             "init_beta": float(starts.beta.min())}
        result = run_chains(
            self._energy(num_obs), starts.z.reshape(num_obs * num_chains, -1),
            num_draws=math.ceil(num_samples / num_chains), config=settings, groups=num_obs,
        )
        with torch.no_grad():
            theta = self.theta_transform.inv(result.samples)
        self.chain_result = result
        theta = theta.reshape(num_obs, num_chains, *theta.shape[1:])
        if self.check_convergence:
            draws = theta.detach().cpu().double().numpy()
            diverging = result.info.divergent.reshape(num_obs, num_chains, -1).numpy()
            if num_obs == 1:
                self.convergence = [check_draws(draws[0], diverging[0], self.param_names)]
            else:
                self.convergence = check_batch(draws, diverging)
        return theta

    def sample(
        self,
        sample_shape: torch.Size | tuple[int, ...] = (),
        x: Tensor | None = None,
        show_progress_bars: bool | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> Tensor:
        """Posterior draws (*sample_shape, p) in the constrained space.

        ``x``: observations (num_trials, d), iid trials (default: ``set_default_x``).
        Draws are taken round-robin from the chains. ``options``: :class:`NUTSConfig`
        fields for this call (``num_chains``, ``warmup_steps``, ``method`` …).
        """
        shape = torch.Size(sample_shape)
        num = max(shape.numel(), 1)
        theta = self._run(num, x, False, seed, show_progress_bars, options)[0]  # (C, N, p)
        flat = theta.transpose(0, 1).reshape(-1, theta.shape[-1])[:num]
        return self._to_user(flat).reshape(*shape, theta.shape[-1])

    def sample_batched(
        self,
        sample_shape: torch.Size | tuple[int, ...],
        x: Tensor,
        show_progress_bars: bool | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> Tensor:
        """Draws (*sample_shape, B, p) from the posteriors of B observations, in one
        vectorised run (module docstring: what each observation has of its own).

        ``x``: (B, d), one trial per observation, or (B, T, d), T iid trials each.
        Per-observation diagnostics are in ``self.convergence`` after the call.
        """
        shape = torch.Size(sample_shape)
        num = max(shape.numel(), 1)
        theta = self._run(num, x, True, seed, show_progress_bars, options)  # (B, C, N, p)
        num_obs, p = theta.shape[0], theta.shape[-1]
        flat = theta.transpose(1, 2).reshape(num_obs, -1, p)[:, :num]  # (B, num, p)
        return self._to_user(flat.transpose(0, 1)).reshape(*shape, num_obs, p)

    def sample_arviz(
        self,
        num_samples: int,
        x: Tensor | None = None,
        show_progress_bars: bool | None = None,
        seed: int | None = None,
        **options: Any,
    ):
        """ArviZ data (``InferenceData``, or ``DataTree`` with arviz ≥ 1) of
        ⌈num_samples / num_chains⌉ draws per chain.

        Groups: ``posterior`` (``theta`` with dims (chain, draw, theta_dim), constrained
        space), ``sample_stats`` (``diverging``, ``step_size``, ``tree_depth``, ``n_steps``,
        ``energy``, ``acceptance_rate``, ``lp``; per chain, see
        :mod:`sbi_mflow.sampling.record`) and ``observed_data`` (``x_o`` with dims
        (trial, x_dim)). Also kept as ``self.inference_data``.
        """
        theta = self._run(num_samples, x, False, seed, show_progress_bars, options)[0]
        result = self.chain_result
        self.inference_data = to_inference_data(
            theta,
            result.info.as_arviz(),
            x_o=self.potential_fn.x_batch[0],
            param_names=self.param_names,
            attrs={
                "sampler": f"pyro {self._last_settings.method}",
                "chain_mode": result.chain_mode,
                "potential": type(self.potential_fn).__name__,
                "sampling_device": str(self.sampling_device),
                "warmup_steps": int(self._last_settings.warmup_steps),
                "thin": int(result.thin),
                "sampling_time_s": float(result.wall_time),
                **self.init_summary,
            },
        )
        return self.inference_data

    # --------------------------------------------------------------------- densities
    def _check_in_support(self, theta: Tensor) -> Tensor:
        flat = theta.reshape(-1, theta.shape[-1])
        inside = self.prior.support.check(flat)
        if inside.dim() > 1:
            inside = inside.all(-1)
        if not bool(inside.all()):
            bad = flat[~inside][0].tolist()
            raise ValueError(
                f"{int((~inside).sum())} θ value(s) lie outside the prior's support, e.g. "
                f"{bad}; the posterior density is zero there."
            )
        return theta

    def log_prob(
        self,
        theta: Tensor,
        x: Tensor | None = None,
        track_gradients: bool = False,
    ) -> Tensor:
        """Unnormalised log posterior log π(θ) + Σ_t log q(x_o,t | θ): (C, p) -> (C,).

        Defined up to a θ-independent constant (the evidence, and for the chart potential
        the decoder metric term Σ_t −½ log det JᵀJ). θ outside the prior's support raises
        ``ValueError``. Returned on the estimator's device.
        """
        theta = self.potential_fn.check_theta(theta).to(self.prior_dtype)
        self._check_in_support(theta)
        self._observe(x)
        return self.potential_fn(theta, track_gradients=track_gradients).to(self.user_device)

    def log_prob_batched(
        self,
        theta: Tensor,
        x: Tensor,
        norm_posterior: bool = False,
        track_gradients: bool = False,
    ) -> Tensor:
        """Unnormalised log posteriors of B observations: θ (S, B, p), x (B, d) or
        (B, T, d) → (S, B). ``norm_posterior=True`` is not available (MCMC posteriors are
        unnormalised, as sbi's)."""
        if norm_posterior:
            raise ValueError("The NUTS posterior is unnormalised: use norm_posterior=False.")
        theta = torch.as_tensor(theta)
        p = self.potential_fn.param_dim
        if theta.dim() != 3 or theta.shape[-1] != p:
            raise ValueError(f"θ must have shape (S, B, {p}), got {tuple(theta.shape)}.")
        theta = theta.to(self.sampling_device, self.prior_dtype)
        self._check_in_support(theta)
        x_batch = self._observe(x, batched=True)
        if theta.shape[1] != x_batch.shape[0]:
            raise ValueError(
                f"θ has {theta.shape[1]} batch entries but x has {x_batch.shape[0]} observations."
            )
        values = self.potential_fn.batched(theta.transpose(0, 1), track_gradients)
        return values.transpose(0, 1).to(self.user_device)

    def map(
        self,
        x: Tensor | None = None,
        num_iter: int = 100,
        num_to_optimize: int = 10,
        learning_rate: float = 1.0,
        init_method: str | Tensor = "proposal",
        num_init_samples: int = 1000,
        save_best_every: int = 10,
        show_progress_bars: bool = False,
        force_update: bool = False,
    ) -> Tensor:
        """MAP estimate (p,) (:func:`~sbi_mflow.sampling.map.find_map`): L-BFGS in the
        unconstrained space from the best of ``num_init_samples`` prior draws
        (``init_method="proposal"``), posterior draws (``"posterior"``) or given points (a
        tensor). The result for the default x is cached (``force_update`` recomputes it).
        ``save_best_every`` and ``show_progress_bars`` are accepted for sbi's signature and
        unused."""
        use_default = x is None
        if use_default and self._map is not None and not force_update:
            return self._map
        self._observe(x)
        if isinstance(init_method, Tensor):
            inits = self.potential_fn.check_theta(init_method)
        elif init_method == "proposal":
            inits = self.prior.sample((num_init_samples,))
        elif init_method == "posterior":
            inits = self.sample((num_init_samples,), x=x).to(self.sampling_device)
        else:
            raise ValueError(
                f"init_method must be 'proposal', 'posterior' or a tensor, got {init_method!r}."
            )
        theta = self._to_user(find_map(self.potential_fn, self.theta_transform, inits,
                                       num_to_optimize, num_iter, learning_rate))
        if use_default:
            self._map = theta
        return theta


def _config_only(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in NUTSConfig.option_names()}


def nuts_posterior(estimator, prior, config: NUTSConfig | None = None,
                   **options: Any) -> NUTSPosterior:
    """NUTS posterior from any trained sbi likelihood estimator q(x | θ) (sbi's NSF/MAF
    trained by NLE or :class:`~sbi_mflow.ManifoldNLE`): the exact potential Σ_t log q(x_t |
    θ) + log π(θ) on the estimator's device (or ``sampling_device``). ``options``:
    :class:`NUTSConfig` fields and :class:`NUTSPosterior`'s keywords."""
    config = (config or NUTSConfig()).replace(**_config_only(options))
    rest = {k: v for k, v in options.items() if k not in NUTSConfig.option_names()}
    device = resolve_sampling_device(config.sampling_device, estimator, chart=False)
    potential = manifold_potential(estimator, prior, exact=True, device=device)
    return NUTSPosterior(potential, config, user_device=estimator_device_dtype(estimator)[0],
                         **rest)

