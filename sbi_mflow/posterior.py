"""NUTS posterior p(θ | x_o) ∝ π(θ) Π_i p̂(x_o,i | θ) for manifold-learning flow likelihoods.

:class:`ManifoldPosterior` follows sbi's posterior interface (``sample``, ``log_prob`` up to a
constant, ``set_default_x``, ``map``, ``potential``) and adds :meth:`~ManifoldPosterior.
sample_arviz`. Sampling:

1. the potential (:func:`sbi_mflow.potential.manifold_potential`): x_o encoded once and
   only the inner flow evaluated per step for fixed-manifold models; the exact likelihood
   for "pie-conditional";
2. Pyro NUTS (or HMC) in the unconstrained space z = T(θ) of the prior's support
   (``sbi.utils.mcmc_transform``: logit-affine for a box prior), with energy
   U(z) = −log π(θ) − Σ_i log p̂(x_o,i | θ) − log|det ∂θ/∂z|,  θ = T⁻¹(z);
3. ``num_chains`` chains, vectorised as one product-space NUTS state by default (one
   batched potential call per leapfrog step for all chains; see :mod:`sbi_mflow.nuts`),
   each started from a
   prior draw chosen by sampling-importance-resampling among ``num_init_candidates`` prior
   draws weighted by exp(potential) (without replacement, so chains start apart); warm-up
   adapts step size and a diagonal mass matrix;
4. after sampling: R̂ / bulk ESS / divergence warnings (:mod:`sbi_mflow.diagnostics`), and
   an off-manifold warning for x_o with large reconstruction error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from sbi.inference.posteriors.base_posterior import NeuralPosterior
from sbi.utils import mcmc_transform
from sbi.utils.sbiutils import gradient_ascent
from torch import Tensor
from torch.distributions import Distribution

from sbi_mflow.arviz_data import default_param_names, to_inference_data
from sbi_mflow.diagnostics import check_convergence, check_on_manifold
from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.nuts import ChainResult, run_chains
from sbi_mflow.potential import ManifoldPotential, manifold_potential

__all__ = ["ManifoldPosterior", "manifold_posterior"]


class ManifoldPosterior(NeuralPosterior):
    """Posterior over θ sampled with Pyro NUTS on a manifold-flow likelihood.

    Args:
        estimator: trained :class:`~sbi_mflow.ManifoldFlowEstimator` (a frozen copy is used).
        prior: prior π(θ) (e.g. sbi's ``BoxUniform``), on the estimator's device.
        method: "nuts" (default) or "hmc".
        num_chains: chains (default 4).
        warmup_steps: adaptation steps (default 200).
        vectorize_chains: run the chains as one vectorised NUTS state (default; chains share
            step size and trajectory length) or one after another (independent adaptation).
        target_accept_prob, max_tree_depth: NUTS settings (0.8, 10).
        step_size, num_steps: initial step size; HMC's leapfrog steps per transition.
        num_init_candidates: prior draws screened by the potential to start the chains.
        exact: force the exact likelihood (True) or the chart potential (False); default
            chooses the chart potential when it is exact (fixed manifold).
        param_names: names of θ's components for ArviZ (default ``theta_0 …``).
        reference_x, reference_errors: training data or their reconstruction errors, used
            to judge whether x_o is off the manifold (see :mod:`sbi_mflow.diagnostics`).
        check_manifold: warn when x_o is far off the learned manifold (fixed manifold only).
        check_convergence: warn on R̂ > 1.01, low bulk ESS or divergences after sampling.
        show_progress_bars: Pyro progress bars.
        num_threads: torch threads while sampling (1: fastest for one chain's small batches,
            see :func:`sbi_mflow.nuts.run_chains`; None keeps torch's setting).
        x_o: optional default observations (num_trials, d).
    """

    def __init__(
        self,
        estimator: ManifoldFlowEstimator,
        prior: Distribution,
        method: str = "nuts",
        num_chains: int = 4,
        warmup_steps: int = 200,
        target_accept_prob: float = 0.8,
        max_tree_depth: int = 10,
        step_size: float = 0.5,
        num_steps: int = 10,
        num_init_candidates: int = 1000,
        exact: bool | None = None,
        param_names: Sequence[str] | None = None,
        reference_x: Tensor | None = None,
        reference_errors: Tensor | None = None,
        check_manifold: bool = True,
        check_convergence: bool = True,
        show_progress_bars: bool = False,
        num_threads: int | None = 1,
        vectorize_chains: bool = True,
        x_o: Tensor | None = None,
    ) -> None:
        if prior is None:
            raise ValueError("A prior is needed to build the posterior.")
        potential = manifold_potential(estimator, prior, exact=exact)
        theta_transform = mcmc_transform(prior, device=potential.device)
        super().__init__(potential, theta_transform=theta_transform, device=potential.device)
        self.potential_fn: ManifoldPotential = potential
        self.prior = prior
        self.proposal = prior
        self.options: dict[str, Any] = {}
        self._set_options(
            method=method, num_chains=num_chains, warmup_steps=warmup_steps,
            target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
            step_size=step_size, num_steps=num_steps,
            num_init_candidates=num_init_candidates, num_threads=num_threads,
            vectorize_chains=vectorize_chains,
        )
        p = potential.param_dim
        self.param_names = list(param_names) if param_names is not None else (
            default_param_names(p)
        )
        if len(self.param_names) != p:
            raise ValueError(f"param_names must have {p} entries, got {self.param_names}.")
        self.reference_x = reference_x
        self.reference_errors = reference_errors
        self.check_manifold = check_manifold and potential.estimator.has_fixed_manifold
        self.check_convergence = check_convergence
        self.show_progress_bars = show_progress_bars
        self.inference_data = None
        self.chain_result: ChainResult | None = None
        self._checked_x: Tensor | None = None
        self._purpose = (
            f"Sampled with Pyro {method.upper()} on the "
            f"{'exact' if potential.__class__.__name__.startswith('Exact') else 'chart'} "
            "potential."
        )
        if x_o is not None:
            self.set_default_x(x_o)

    # --------------------------------------------------------------------- options
    def _set_options(self, **options: Any) -> dict[str, Any]:
        """Validate sampler options and merge them into a copy of the defaults."""
        if self.options:
            options = {k: v for k, v in options.items() if v is not None}
        merged = {**self.options, **options}
        if merged["method"] not in ("nuts", "hmc"):
            raise ValueError(f"method must be 'nuts' or 'hmc', got {merged['method']!r}.")
        for key in ("num_chains", "num_init_candidates", "max_tree_depth", "num_steps"):
            if int(merged[key]) < 1:
                raise ValueError(f"{key} must be >= 1, got {merged[key]}.")
        if int(merged["warmup_steps"]) < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {merged['warmup_steps']}.")
        if merged["num_threads"] is not None and int(merged["num_threads"]) < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {merged['num_threads']}.")
        if not 0.0 < float(merged["target_accept_prob"]) < 1.0:
            raise ValueError("target_accept_prob must be in (0, 1).")
        if not self.options:
            self.options = merged
        return merged

    # ------------------------------------------------------------------- x handling
    def set_default_x(self, x: Tensor) -> ManifoldPosterior:
        """Set the default observations x_o (num_trials, d) (iid trials as rows)."""
        self._x = self.potential_fn.check_x(x)
        self._map = None
        return self

    def _use_x(self, x: Tensor | None) -> Tensor:
        """Pick x (or the default), validate it, set it on the potential, check the manifold."""
        if x is None:
            if self.default_x is None:
                raise ValueError(
                    "Observations x are needed: pass x=... or call .set_default_x(x_o) first."
                )
            x = self.default_x
        x = self.potential_fn.check_x(x)
        current = self.potential_fn.return_x_o()
        if current is None or current.shape != x.shape or not torch.equal(current, x):
            self.potential_fn.set_x(x)
        if self.check_manifold and (
            self._checked_x is None
            or self._checked_x.shape != x.shape
            or not torch.equal(self._checked_x, x)
        ):
            check_on_manifold(
                self.potential_fn.estimator, x, self.reference_x, self.reference_errors
            )
            self._checked_x = x
        return x

    # ---------------------------------------------------------------------- energy
    def energy(self, z: Tensor) -> Tensor:
        """U(z) = −potential(T⁻¹(z)) − log|det ∂T⁻¹/∂z|: z (C, p) -> (C,)."""
        theta = self.theta_transform.inv(z)
        log_det = self.theta_transform.inv.log_abs_det_jacobian(z, theta)
        return -(self.potential_fn(theta, track_gradients=True) + log_det)

    def initial_points(self, num_chains: int, num_candidates: int) -> Tensor:
        """Chain starts (num_chains, p) in the unconstrained space (float64).

        ``num_candidates`` prior draws are weighted by exp(potential); ``num_chains`` of them
        are drawn without replacement (with replacement if fewer have a finite potential).
        """
        candidates = self.prior.sample((num_candidates,))
        with torch.no_grad():
            log_weights = torch.cat([
                self.potential_fn(chunk, track_gradients=False).detach()
                for chunk in candidates.split(1024)
            ])
        finite = torch.isfinite(log_weights)
        if not bool(finite.any()):
            raise RuntimeError(
                f"The potential is -inf or NaN at all {num_candidates} prior draws: the "
                "likelihood of x_o is zero everywhere; check x_o and the estimator."
            )
        weights = torch.zeros_like(log_weights, dtype=torch.float64)
        weights[finite] = torch.exp(
            (log_weights[finite] - log_weights[finite].max()).to(torch.float64)
        )
        replacement = int((weights > 0).sum()) < num_chains
        index = torch.multinomial(weights, num_chains, replacement=replacement)
        return self.theta_transform(candidates[index]).to(torch.float64).detach()

    # --------------------------------------------------------------------- sampling
    def run(
        self,
        num_samples: int,
        x: Tensor | None = None,
        seed: int | None = None,
        show_progress_bars: bool | None = None,
        **options: Any,
    ):
        """Run the chains for at least ``num_samples`` draws in total; returns InferenceData.

        Each chain keeps ⌈num_samples / num_chains⌉ draws. ``options`` override the
        constructor's sampler settings for this call. The result is also stored as
        ``self.inference_data`` (and the raw chains as ``self.chain_result``).
        """
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
        unknown = set(options) - set(self.options)
        if unknown:
            raise TypeError(f"Unknown sampler options {sorted(unknown)}; known: "
                            f"{sorted(self.options)}.")
        settings = self._set_options(**options)
        x = self._use_x(x)
        if seed is not None:
            import pyro

            pyro.set_rng_seed(seed)
        num_chains = int(settings["num_chains"])
        inits = self.initial_points(num_chains, int(settings["num_init_candidates"]))
        progress = self.show_progress_bars if show_progress_bars is None else show_progress_bars
        result = run_chains(
            self.energy,
            inits,
            num_draws=math.ceil(num_samples / num_chains),
            warmup_steps=int(settings["warmup_steps"]),
            method=settings["method"],
            target_accept_prob=float(settings["target_accept_prob"]),
            max_tree_depth=int(settings["max_tree_depth"]),
            step_size=float(settings["step_size"]),
            num_steps=int(settings["num_steps"]),
            show_progress_bars=progress,
            num_threads=settings["num_threads"],
            vectorize_chains=bool(settings["vectorize_chains"]),
        )
        with torch.no_grad():
            constrained = self.theta_transform.inv(result.samples)
        self.chain_result = result
        self.inference_data = to_inference_data(
            constrained,
            result.stats,
            x_o=x,
            param_names=self.param_names,
            attrs={
                "sampler": f"pyro {settings['method']}",
                "potential": type(self.potential_fn).__name__,
                "warmup_steps": int(settings["warmup_steps"]),
                "sampling_time_s": float(sum(result.wall_time)),
            },
        )
        if self.check_convergence:
            check_convergence(self.inference_data)
        return self.inference_data

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
        Draws are taken round-robin from the chains. ``options``: sampler settings for this
        call (``num_chains``, ``warmup_steps``, ``method``, ``target_accept_prob`` …).
        """
        shape = torch.Size(sample_shape)
        num = max(shape.numel(), 1)
        self.run(num, x=x, seed=seed, show_progress_bars=show_progress_bars, **options)
        draws = self.inference_data.posterior["theta"].values  # (C, N, p)
        flat = torch.as_tensor(draws).transpose(0, 1).reshape(-1, draws.shape[-1])[:num]
        dtype = self.prior.sample((1,)).dtype
        return flat.to(self._device, dtype).reshape(*shape, draws.shape[-1])

    def sample_arviz(
        self,
        num_samples: int,
        x: Tensor | None = None,
        show_progress_bars: bool | None = None,
        seed: int | None = None,
        **options: Any,
    ):
        """ArviZ ``InferenceData`` of ⌈num_samples / num_chains⌉ draws per chain.

        Groups: ``posterior`` (``theta`` with dims (chain, draw, theta_dim), constrained
        space), ``sample_stats`` (``diverging``, ``step_size``, ``tree_depth``, ``n_steps``,
        ``energy``, ``acceptance_rate``, ``lp``; see :mod:`sbi_mflow.nuts`) and
        ``observed_data`` (``x_o`` with dims (trial, x_dim)).
        """
        return self.run(num_samples, x=x, seed=seed, show_progress_bars=show_progress_bars,
                        **options)

    def sample_batched(self, sample_shape, x: Tensor, show_progress_bars: bool = True,
                       **kwargs: Any) -> Tensor:
        """Not supported: rows of x are iid trials of one observation; loop over datasets."""
        raise NotImplementedError(
            "ManifoldPosterior treats the rows of x as iid trials of one experiment; for "
            "several independent observations call .sample(shape, x=x_j) for each x_j."
        )

    # --------------------------------------------------------------------- densities
    def _check_in_support(self, theta: Tensor) -> Tensor:
        theta = self.potential_fn.check_theta(theta)
        inside = self.prior.support.check(theta.to(self._device))
        if inside.dim() > 1:
            inside = inside.all(-1)
        if not bool(inside.all()):
            bad = theta[~inside][0].tolist()
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
        """Unnormalised log posterior log π(θ) + Σ_i log p̂(x_o,i | θ): (C, p) -> (C,).

        Defined up to a θ-independent constant (the evidence, and for the chart potential
        the decoder metric term Σ_i −½ log det JᵀJ). θ outside the prior's support raises
        ``ValueError``.
        """
        theta = self._check_in_support(theta)
        self._use_x(x)
        return self.potential_fn(theta, track_gradients=track_gradients)

    def map(
        self,
        x: Tensor | None = None,
        num_iter: int = 500,
        num_to_optimize: int = 10,
        learning_rate: float = 0.05,
        init_method: str | Tensor = "proposal",
        num_init_samples: int = 1000,
        save_best_every: int = 10,
        show_progress_bars: bool = False,
        force_update: bool = False,
    ) -> Tensor:
        """MAP estimate (p,): Adam ascent in the unconstrained space of the support.

        Starts from the ``num_to_optimize`` best of ``num_init_samples`` prior draws
        (``init_method="proposal"``), posterior draws (``"posterior"``) or given points. The
        result for the default x is cached (``force_update`` recomputes it).
        """
        use_default = x is None
        if use_default and self._map is not None and not force_update:
            return self._map
        self._use_x(x)
        if isinstance(init_method, Tensor):
            inits = init_method
        elif init_method == "proposal":
            inits = self.prior.sample((num_init_samples,))
        elif init_method == "posterior":
            inits = self.sample((num_init_samples,), x=x)
        else:
            raise ValueError(
                f"init_method must be 'proposal', 'posterior' or a tensor, got {init_method!r}."
            )
        theta, _ = gradient_ascent(
            potential_fn=self.potential_fn,
            inits=inits,
            theta_transform=self.theta_transform,
            num_iter=num_iter,
            num_to_optimize=min(num_to_optimize, inits.shape[0]),
            learning_rate=learning_rate,
            save_best_every=save_best_every,
            show_progress_bars=show_progress_bars,
        )
        theta = theta.detach().reshape(-1)
        if use_default:
            self._map = theta
        return theta


def manifold_posterior(
    estimator: ManifoldFlowEstimator,
    prior: Distribution,
    **options: Any,
) -> ManifoldPosterior:
    """NUTS posterior from any trained estimator and prior (no trainer needed).

    ``options`` are those of :class:`ManifoldPosterior` (``method``, ``num_chains``,
    ``warmup_steps``, ``target_accept_prob``, ``exact``, ``param_names``, ``reference_x``,
    ``x_o`` …).

    Example::

        posterior = sbi_mflow.manifold_posterior(estimator, prior, num_chains=4)
        samples = posterior.sample((1000,), x=x_o)          # x_o (num_trials, d)
        idata = posterior.sample_arviz(1000, x=x_o)          # ArviZ InferenceData
    """
    return ManifoldPosterior(estimator, prior, **options)
