"""NUTS posterior p(θ | x_o) ∝ π(θ) Π_i p̂(x_o,i | θ) for manifold-learning flow likelihoods.

:class:`ManifoldPosterior` follows sbi's posterior interface (``sample``, ``log_prob`` up to a
constant, ``set_default_x``, ``map``, ``potential``) and adds :meth:`~ManifoldPosterior.
sample_arviz`. Sampling (settings: one :class:`~sbi_mflow.sampling.config.NUTSConfig`):

1. the potential (:func:`~sbi_mflow.sampling.potential.manifold_potential`): x_o encoded
   once and only the inner flow evaluated per step for fixed-manifold models; the exact
   likelihood for "pie-conditional". It is evaluated on ``sampling_device`` ("auto": the
   CPU for the chart potential, see :func:`resolve_sampling_device`);
2. Pyro NUTS (or HMC) in the unconstrained space z = T(θ) of the prior's support
   (``sbi.utils.mcmc_transform``: logit-affine for a box prior), with energy
   U(z) = −log π(θ) − Σ_i log p̂(x_o,i | θ) − log|det ∂θ/∂z|,  θ = T⁻¹(z), in float64;
3. ``num_chains`` chains (:mod:`sbi_mflow.sampling.chains`), started by systematic
   sampling-importance-resampling among ``num_init_candidates`` prior draws
   (:mod:`sbi_mflow.sampling.init`), so the modes of a multimodal posterior get chains in
   proportion to their mass;
4. after sampling: R̂ / bulk ESS / divergence / mode-disagreement warnings
   (:mod:`sbi_mflow.sampling.convergence`), and an off-manifold warning for x_o with a
   large reconstruction error (:mod:`sbi_mflow.sampling.manifold_check`).

Devices: samples, ``log_prob`` and ``map`` are returned on the estimator's device (where
the user trained), in the prior's dtype, whatever device sampling ran on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from sbi.inference.posteriors.base_posterior import NeuralPosterior
from sbi.utils import mcmc_transform
from torch import Tensor
from torch.distributions import Distribution, biject_to, constraints
from torch.distributions.transforms import IndependentTransform

from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.sampling.arviz_data import default_param_names, to_inference_data
from sbi_mflow.sampling.chains import ChainResult, run_chains
from sbi_mflow.sampling.config import NUTSConfig
from sbi_mflow.sampling.convergence import check_convergence
from sbi_mflow.sampling.init import importance_ess, systematic_resample
from sbi_mflow.sampling.manifold_check import check_on_manifold
from sbi_mflow.sampling.potential import (
    ManifoldPotential,
    estimator_device_dtype,
    manifold_potential,
)

__all__ = [
    "ManifoldPosterior",
    "manifold_posterior",
    "resolve_sampling_device",
    "unconstraining_transform",
]

#: Rows (θ's × trials) per potential call when screening SIR candidates.
_SCREENING_ROWS = 2**16
#: Most rows (candidates × trials) screened for SIR starts while seeking init_target_ess.
_SCREENING_BUDGET = 2**22


def resolve_sampling_device(
    sampling_device: str, estimator: ManifoldFlowEstimator, exact: bool
) -> torch.device:
    """Where the posterior potential is evaluated.

    "auto": the CPU for the chart potential — an n-dimensional inner flow on a few cached
    encodings per step, so a GPU spends its time launching tiny kernels (on an H200, 1000
    draws took 153 s against 18.8 s on one CPU thread) — and the estimator's device for
    the exact potential, which runs the outer flow and its Jacobian at every step.

    Raises:
        ValueError: a CUDA device is asked for but CUDA is not available.
    """
    if sampling_device == "auto":
        return estimator_device_dtype(estimator)[0] if exact else torch.device("cpu")
    device = torch.device(sampling_device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"sampling_device={sampling_device!r} but CUDA is not available; use 'cpu' or "
            "'auto'."
        )
    return torch.zeros(0, device=device).device  # "cuda" -> "cuda:0"


def unconstraining_transform(prior: Distribution, device: torch.device):
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


class ManifoldPosterior(NeuralPosterior):
    """Posterior over θ sampled with Pyro NUTS on a manifold-flow likelihood.

    Args:
        estimator: trained :class:`~sbi_mflow.ManifoldFlowEstimator` (a frozen copy is used).
        prior: prior π(θ) (e.g. sbi's ``BoxUniform``), on any device: it is moved to the
            sampling device with :func:`sbi_mflow.priors.prior_on_device`.
        config: sampler settings (default :class:`NUTSConfig`).
        exact: force the exact likelihood (True) or the chart potential (False); default
            chooses the chart potential when it is exact (fixed manifold).
        param_names: names of θ's components for ArviZ (default ``theta_0 …``).
        reference_x, reference_errors: training data or their reconstruction errors, used
            to judge whether x_o is off the manifold (see
            :mod:`sbi_mflow.sampling.manifold_check`).
        check_manifold: warn when x_o is far off the learned manifold (fixed manifold only).
        check_convergence: warn on R̂ > 1.01, low bulk ESS, divergences or chains in
            different modes after sampling.
        x_o: optional default observations (num_trials, d).
        options: :class:`NUTSConfig` fields overriding ``config`` (``num_chains=40`` …).
    """

    def __init__(
        self,
        estimator: ManifoldFlowEstimator,
        prior: Distribution,
        config: NUTSConfig | None = None,
        *,
        exact: bool | None = None,
        param_names: Sequence[str] | None = None,
        reference_x: Tensor | None = None,
        reference_errors: Tensor | None = None,
        check_manifold: bool = True,
        check_convergence: bool = True,
        x_o: Tensor | None = None,
        **options: Any,
    ) -> None:
        if prior is None:
            raise ValueError("A prior is needed to build the posterior.")
        if not isinstance(estimator, ManifoldFlowEstimator):
            raise TypeError(
                f"estimator must be a ManifoldFlowEstimator, got {type(estimator).__name__}."
            )
        self.config = (config or NUTSConfig()).replace(**options)
        self.user_device = estimator_device_dtype(estimator)[0]
        uses_exact = (not estimator.has_fixed_manifold) if exact is None else bool(exact)
        device = resolve_sampling_device(self.config.sampling_device, estimator, uses_exact)
        potential = manifold_potential(estimator, prior, exact=exact, device=device)
        theta_transform = unconstraining_transform(potential.prior, potential.device)
        super().__init__(potential, theta_transform=theta_transform, device=potential.device)
        self.potential_fn: ManifoldPotential = potential
        self.prior = potential.prior
        self.proposal = self.prior
        self.prior_dtype = potential.prior_dtype
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
        self.inference_data = None
        self.chain_result: ChainResult | None = None
        self.init_summary: dict[str, float] = {}
        self._checked_x: Tensor | None = None
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
            reference_x = None if self.reference_x is None else self.reference_x.to(x.device)
            check_on_manifold(
                self.potential_fn.estimator, x, reference_x, self.reference_errors
            )
            self._checked_x = x
        return x

    def _to_user(self, theta: Tensor) -> Tensor:
        return theta.to(self.user_device, self.prior_dtype)

    # ---------------------------------------------------------------------- energy
    def energy(self, z: Tensor) -> Tensor:
        """U(z) = −potential(T⁻¹(z)) − log|det ∂T⁻¹/∂z|: z (C, p) -> (C,) in z's dtype."""
        theta = self.theta_transform.inv(z)
        log_det = self.theta_transform.inv.log_abs_det_jacobian(z, theta)
        return -(self.potential_fn(theta, track_gradients=True) + log_det).to(z.dtype)

    def _log_weights(self, theta: Tensor) -> Tensor:
        """Unnormalised log posterior of many θ (M, p), in chunks, without gradients."""
        chunk = max(1, _SCREENING_ROWS // self.potential_fn.num_trials)
        with torch.no_grad():
            return torch.cat([
                self.potential_fn(part, track_gradients=False).detach()
                for part in theta.split(chunk)
            ])

    def initial_points(
        self, num_chains: int, num_candidates: int, target_ess: float = 0.0
    ) -> Tensor:
        """Chain starts (num_chains, p) in the unconstrained space (float64).

        Prior draws weighted by their likelihood (importance weights for the prior as
        proposal): ``num_candidates`` of them, then as many again, doubling, while their
        effective sample size is below ``target_ess``, up to 100 × ``num_candidates``
        candidates and 2^22 candidates × trials. Resampled by sorted systematic
        resampling (:mod:`sbi_mflow.sampling.init`), so that modes get chains in
        proportion to their importance mass, ±1. The number of candidates and their ESS
        are kept in ``self.init_summary``.
        """
        budget = _SCREENING_BUDGET // self.potential_fn.num_trials
        limit = max(num_candidates, min(100 * num_candidates, budget))
        candidates, log_weights, batch = [], [], num_candidates
        while True:
            draws = self.prior.sample((batch,))
            candidates.append(draws)
            log_weights.append(self._log_weights(draws) - self.prior.log_prob(draws))
            total = sum(len(c) for c in candidates)
            ess = importance_ess(torch.cat(log_weights))
            if ess >= target_ess or total >= limit:
                break
            batch = min(total, limit - total)
        candidates, log_weights = torch.cat(candidates), torch.cat(log_weights)
        self.init_summary = {"init_candidates": int(total), "init_ess": ess}
        z = self.theta_transform(candidates).to(torch.float64)
        log_weights[~torch.isfinite(z).all(-1)] = -math.inf  # on the support's boundary
        if not bool(torch.isfinite(log_weights).any()):
            raise RuntimeError(
                f"The potential is -inf or NaN at all {total} prior draws: the likelihood "
                "of x_o is zero everywhere; check x_o and the estimator."
            )
        index = systematic_resample(log_weights, num_chains, points=candidates).to(z.device)
        return z[index].detach()

    # --------------------------------------------------------------------- sampling
    def run(
        self,
        num_samples: int,
        x: Tensor | None = None,
        seed: int | None = None,
        show_progress_bars: bool | None = None,
        **options: Any,
    ):
        """Run the chains for at least ``num_samples`` draws in total; returns ArviZ data.

        Each chain keeps ⌈num_samples / num_chains⌉ draws, thinned as
        :meth:`NUTSConfig.thin_for` says. ``options``: :class:`NUTSConfig`
        fields for this call. The result is also stored as ``self.inference_data`` (and
        the chains with their per-transition records as ``self.chain_result``).
        """
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
        if show_progress_bars is not None:
            options["show_progress_bars"] = show_progress_bars
        settings = self._settings(options)
        x = self._use_x(x)
        if seed is not None:
            import pyro

            pyro.set_rng_seed(seed)
        inits = self.initial_points(settings.num_chains, settings.num_init_candidates,
                                    settings.init_target_ess)
        result = run_chains(
            self.energy, inits, num_draws=math.ceil(num_samples / settings.num_chains),
            config=settings,
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
                "sampler": f"pyro {settings.method}",
                "chain_mode": settings.chain_mode,
                "potential": type(self.potential_fn).__name__,
                "sampling_device": str(self.sampling_device),
                "warmup_steps": int(settings.warmup_steps),
                "thin": int(result.thin),
                "sampling_time_s": float(result.wall_time),
                **self.init_summary,
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
        Draws are taken round-robin from the chains. ``options``: :class:`NUTSConfig`
        fields for this call (``num_chains``, ``warmup_steps``, ``method`` …).
        """
        shape = torch.Size(sample_shape)
        num = max(shape.numel(), 1)
        self.run(num, x=x, seed=seed, show_progress_bars=show_progress_bars, **options)
        draws = torch.as_tensor(self.inference_data.posterior["theta"].values)  # (C, N, p)
        flat = draws.transpose(0, 1).reshape(-1, draws.shape[-1])[:num]
        return self._to_user(flat).reshape(*shape, draws.shape[-1])

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
        (trial, x_dim)).
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
        theta = self.potential_fn.check_theta(theta).to(self.prior_dtype)
        inside = self.prior.support.check(theta)
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
        ``ValueError``. Returned on the estimator's device.
        """
        theta = self._check_in_support(theta)
        self._use_x(x)
        return self.potential_fn(theta, track_gradients=track_gradients).to(self.user_device)

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
        """MAP estimate (p,): L-BFGS (torch.optim, strong Wolfe line search) in float64 in
        the unconstrained space z of the prior's support, maximising log π(θ) + Σ_i log
        p̂(x_o,i | θ) at θ = T⁻¹(z) (the density of θ, no Jacobian term).

        Runs from the ``num_to_optimize`` most probable of ``num_init_samples`` prior
        draws (``init_method="proposal"``), posterior draws (``"posterior"``) or given
        points (a tensor), each for at most ``num_iter`` L-BFGS iterations with initial step
        ``learning_rate``; returns the best end point. The result for the default x is
        cached (``force_update`` recomputes it). ``save_best_every`` and
        ``show_progress_bars`` are accepted for sbi's signature and unused.
        """
        use_default = x is None
        if use_default and self._map is not None and not force_update:
            return self._map
        self._use_x(x)
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
        order = torch.argsort(self._log_weights(inits), descending=True)
        starts = inits[order[: min(num_to_optimize, inits.shape[0])]]
        best_theta, best_value = None, -math.inf
        for start in starts:
            theta, value = self._maximise(start, num_iter, learning_rate)
            if value > best_value:
                best_theta, best_value = theta, value
        if best_theta is None:
            raise RuntimeError("MAP search failed: the potential is not finite at any start.")
        theta = self._to_user(best_theta)
        if use_default:
            self._map = theta
        return theta

    def _maximise(self, theta: Tensor, num_iter: int, learning_rate: float) -> tuple[Tensor, float]:
        """L-BFGS from one θ; returns (θ*, log posterior at θ*)."""
        z = self.theta_transform(theta.unsqueeze(0)).to(torch.float64).detach()
        if not bool(torch.isfinite(z).all()):
            return theta, -math.inf
        z.requires_grad_(True)
        optimiser = torch.optim.LBFGS(
            [z], lr=learning_rate, max_iter=num_iter, line_search_fn="strong_wolfe",
            tolerance_grad=1e-10, tolerance_change=1e-14, history_size=20,
        )

        def closure() -> Tensor:
            optimiser.zero_grad()
            loss = -self.potential_fn(self.theta_transform.inv(z), track_gradients=True)
            loss = loss.to(torch.float64).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        with torch.no_grad():
            theta = self.theta_transform.inv(z.detach())[0]
            value = float(self.potential_fn(theta.unsqueeze(0), track_gradients=False)[0])
        return theta, value if math.isfinite(value) else -math.inf


def manifold_posterior(
    estimator: ManifoldFlowEstimator,
    prior: Distribution,
    config: NUTSConfig | None = None,
    **options: Any,
) -> ManifoldPosterior:
    """NUTS posterior from any trained estimator and prior (no trainer needed).

    ``options``: :class:`NUTSConfig` fields (``num_chains``, ``warmup_steps``,
    ``sampling_device`` …) and :class:`ManifoldPosterior`'s keywords (``exact``,
    ``param_names``, ``reference_x``, ``x_o`` …).

    Example::

        posterior = sbi_mflow.manifold_posterior(estimator, prior, num_chains=10)
        samples = posterior.sample((1000,), x=x_o)          # x_o (num_trials, d)
        idata = posterior.sample_arviz(1000, x=x_o)          # ArviZ data with diagnostics
    """
    return ManifoldPosterior(estimator, prior, config, **options)
