"""Posterior potentials log π(θ) + Σ_t log q(x_o,t | θ), for B observations at once.

Both follow sbi's ``BasePotential`` interface (``potential(θ (C, p)) -> (C,)``, the
unnormalised log posterior; the MCMC *energy* is its negative) and add
:meth:`~ExactLikelihoodPotential.batched`: B observations x (B, T, d) (T iid trials each)
and θ (B, C, p) (C points per observation) → (B, C), in one call.

* :class:`ExactLikelihoodPotential`: Σ_t ``estimator.log_prob(x_o,t, θ)`` + log π(θ) for any
  sbi ``ConditionalDensityEstimator`` q(x | θ) (sbi's NSF/MAF, or a manifold flow's exact
  likelihood, needed when its manifold depends on θ, e.g. "pie-conditional").
* :class:`ChartPotential` (fixed manifold: M-flow, Me-flow, FOM, PIE with an unconditional
  manifold). The observations are encoded once, u = e(x_o) (B, T, n); each evaluation is one
  n-dimensional inner-flow pass on the B·C·T triples (u_b,t, θ_b,c):

      log π(θ) + Σ_t [log N(h(u_t; θ)) + log|det ∂h/∂u|(u_t; θ)].

  It differs from the exact potential by the θ-independent Σ_t −½ log det(J_gᵀJ_g)(u_t)
  (density on the manifold) or Σ_t [log N(v_t; 0, ε²) + log|det ∂f/∂x|(x_o,t)] (PIE), so
  posteriors, MCMC acceptance probabilities and likelihood ratios are exact with it
  (paper, Sec. 3.3).

:func:`manifold_potential` picks the right one.
"""

from __future__ import annotations

import copy
import warnings

import torch
from sbi.inference.potentials.base_potential import BasePotential
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from torch import Tensor, nn
from torch.distributions import Distribution

from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.priors import prior_on_device
from sbi_mflow.validation import check_finite

__all__ = [
    "ChartPotential",
    "ExactLikelihoodPotential",
    "estimator_device_dtype",
    "frozen_copy",
    "manifold_potential",
]


def frozen_copy(estimator: nn.Module) -> nn.Module:
    """A deep copy in eval mode with ``requires_grad=False`` on every parameter.

    Sampling then builds autograd graphs only for θ; the caller's estimator is untouched
    (forward hooks registered on it are copied along).
    """
    clone = copy.deepcopy(estimator)
    clone.eval()
    clone.requires_grad_(False)
    return clone


def estimator_device_dtype(estimator: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the estimator's parameters."""
    parameter = next(estimator.parameters())
    return parameter.device, parameter.dtype


class ExactLikelihoodPotential(BasePotential):
    """log π(θ) + Σ_t ``estimator.log_prob(x_o,t, condition=θ)`` for any sbi
    ``ConditionalDensityEstimator`` q(x | θ) (NLE's convention: input x, condition θ).

    The prior is evaluated in its own dtype and the likelihood in the estimator's, so any
    combination (e.g. a float64 ``MultivariateNormal`` prior and a float32 estimator)
    works; the potential has the wider of the two dtypes.

    Args:
        estimator: a trained estimator (used as is: pass :func:`frozen_copy` of it to keep
            its parameters out of the autograd graph).
        prior: the prior π(θ), a torch ``Distribution`` over θ ∈ R^p; moved to the
            estimator's device with :func:`sbi_mflow.priors.prior_on_device` if needed.
        x_o: observations (T, d) (or (d,) for one trial), treated as iid trials.
    """

    def __init__(
        self,
        estimator: ConditionalDensityEstimator,
        prior: Distribution,
        x_o: Tensor | None = None,
    ) -> None:
        if not isinstance(estimator, ConditionalDensityEstimator):
            raise TypeError(
                "estimator must be an sbi ConditionalDensityEstimator (a likelihood q(x|θ)), "
                f"got {type(estimator).__name__}."
            )
        if len(estimator.input_shape) != 1 or len(estimator.condition_shape) != 1:
            raise ValueError(
                "Only 1-D x and θ are supported, got input_shape "
                f"{tuple(estimator.input_shape)} and condition_shape "
                f"{tuple(estimator.condition_shape)}."
            )
        self.data_dim = int(estimator.input_shape[0])
        self.param_dim = int(estimator.condition_shape[0])
        if self.param_dim == 0:
            raise ValueError("The estimator is unconditional (param_dim = 0): no θ to infer.")
        self.estimator = estimator
        device, self.dtype = estimator_device_dtype(estimator)
        prior = prior_on_device(prior, device)
        self.prior_dtype = prior.sample((1,)).dtype
        self._x_batch: Tensor | None = None
        super().__init__(prior, x_o=None, device=device)
        if x_o is not None:
            self.set_x(x_o)

    # ---------------------------------------------------------------- observations
    @property
    def num_trials(self) -> int:
        return self.x_batch.shape[1]

    @property
    def x_batch(self) -> Tensor:
        """The observations (B, T, d)."""
        if self._x_batch is None:
            raise ValueError("No observed data is available. Use `potential_fn.set_x(x_o)`.")
        return self._x_batch

    def check_x(self, x_o: Tensor, batched: bool = False) -> Tensor:
        """Validate observations on the estimator's device and dtype.

        One observation (``batched=False``): (T, d) iid trials or (d,) → (T, d). Several
        (``batched=True``): (B, d) one trial each or (B, T, d) → (B, T, d).
        """
        d = self.data_dim
        if not isinstance(x_o, Tensor):
            x_o = torch.as_tensor(x_o)
        if batched:
            x_o = x_o.unsqueeze(1) if x_o.dim() == 2 else x_o
            expected = f"(num_observations, {d}) or (num_observations, num_trials, {d})"
            ok = x_o.dim() == 3
        else:
            x_o = x_o.unsqueeze(0) if x_o.dim() == 1 else x_o
            expected = f"(num_trials, {d}) (iid trials as rows) or ({d},)"
            ok = x_o.dim() == 2
        if not ok or x_o.shape[-1] != d or 0 in x_o.shape:
            name = "x" if batched else "x_o"
            raise ValueError(f"{name} must have shape {expected}, got {tuple(x_o.shape)}.")
        if not torch.is_floating_point(x_o):
            x_o = x_o.to(self.dtype)
        check_finite(x_o, "x")
        return x_o.to(self.device, self.dtype)

    def set_x(self, x_o: Tensor | None, x_is_iid: bool | None = True) -> None:
        """sbi's convention: ``x_is_iid`` — the rows of x_o (T, d) are iid trials of one
        observation; otherwise each row is its own observation (then θ has one row per
        observation in :meth:`__call__`)."""
        if x_o is None:
            self._x_o, self._x_batch = None, None
            self._on_set_x()
            return
        if x_is_iid is False:
            self.set_x_batch(self.check_x(x_o, batched=True).reshape(-1, 1, self.data_dim))
        else:
            self.set_x_batch(self.check_x(x_o).unsqueeze(0))
        self._x_is_iid = x_is_iid is not False

    def set_x_batch(self, x: Tensor) -> None:
        """Set B observations (B, T, d) (already checked), unless they are the ones set."""
        current = self._x_batch
        if current is not None and current.shape == x.shape and torch.equal(current, x):
            return
        self._x_batch = x
        self._x_o = x[0] if x.shape[0] == 1 else x.reshape(-1, self.data_dim)
        self._x_is_iid = x.shape[0] == 1
        self._on_set_x()

    def _on_set_x(self) -> None:
        """Hook for subclasses (e.g. encode x_o once)."""

    # ------------------------------------------------------------------- θ handling
    def check_theta(self, theta: Tensor) -> Tensor:
        """θ (C, p) or (p,) → (C, p) on the estimator's device; NaN/inf raise ``ValueError``."""
        if not isinstance(theta, Tensor):
            theta = torch.as_tensor(theta, dtype=self.dtype)
        if theta.dim() == 1:
            theta = theta.unsqueeze(0)
        if theta.dim() != 2 or theta.shape[-1] != self.param_dim:
            raise ValueError(
                f"θ must have shape (num_thetas, {self.param_dim}) or ({self.param_dim},), "
                f"got {tuple(theta.shape)}."
            )
        check_finite(theta, "θ")
        return theta.to(self.device)

    # ------------------------------------------------------------------- densities
    def log_likelihood_batch(self, theta: Tensor) -> Tensor:
        """Σ_t log q(x_b,t | θ_b,c): θ (B, C, p) -> (B, C), up to a θ-independent constant."""
        x = self.x_batch
        num_obs, num_trials, d = x.shape
        num_thetas = theta.shape[1]
        inputs = x.transpose(0, 1).unsqueeze(2).expand(num_trials, num_obs, num_thetas, d)
        condition = theta.to(self.dtype).reshape(num_obs * num_thetas, -1)
        values = self.estimator.log_prob(inputs.reshape(num_trials, -1, d), condition=condition)
        return values.sum(0).reshape(num_obs, num_thetas)

    def batched(self, theta: Tensor, track_gradients: bool = True) -> Tensor:
        """log π(θ_b,c) + Σ_t log q(x_b,t | θ_b,c): θ (B, C, p) -> (B, C).

        −inf outside the prior's support. Gradients w.r.t. θ only if ``track_gradients``.
        """
        num_obs = self.x_batch.shape[0]
        if theta.dim() != 3 or theta.shape[0] != num_obs or theta.shape[-1] != self.param_dim:
            raise ValueError(
                f"θ must have shape ({num_obs}, num_thetas, {self.param_dim}), got "
                f"{tuple(theta.shape)}."
            )
        theta = theta.to(self.device)
        with torch.set_grad_enabled(track_gradients):
            flat = theta.reshape(-1, self.param_dim).to(self.prior_dtype)
            log_prior = self.prior.log_prob(flat).reshape(theta.shape[:2])  # 2-D for sbi's
            log_lik = self.log_likelihood_batch(theta)
            dtype = torch.promote_types(log_prior.dtype, log_lik.dtype)
            return log_prior.to(dtype) + log_lik.to(dtype)

    def __call__(self, theta: Tensor, track_gradients: bool = True) -> Tensor:
        """Unnormalised log posterior: θ (C, p) -> (C,) for one observation (iid trials),
        or with B observations one θ row per observation (sbi's ``x_is_iid=False``)."""
        theta = self.check_theta(theta)
        num_obs = self.x_batch.shape[0]
        if num_obs == 1:
            return self.batched(theta.unsqueeze(0), track_gradients)[0]
        if theta.shape[0] != num_obs:
            raise ValueError(
                f"{num_obs} observations are set: θ needs one row per observation, got "
                f"{theta.shape[0]}."
            )
        return self.batched(theta.unsqueeze(1), track_gradients)[:, 0]

    def to(self, device: str | torch.device) -> ExactLikelihoodPotential:
        """Move the estimator, the prior and x_o to ``device`` (x_o is encoded again)."""
        self.estimator.to(device)
        self.device = str(estimator_device_dtype(self.estimator)[0])  # sbi keeps a string
        self.prior = prior_on_device(self.prior, self.device)
        if self._x_batch is not None:
            x, self._x_batch = self._x_batch.to(self.device), None
            self.set_x_batch(x)
        return self


class ChartPotential(ExactLikelihoodPotential):
    """Fixed-manifold potential: x_o encoded once, then only the inner flow h(·; θ) runs.

    ``u`` holds the encoded observations (B, T, n). For θ (B, C, p) the chart log-likelihood
    of all B·C·T triples is evaluated in one ``latent_log_prob`` batch and summed over trials.
    """

    def __init__(
        self,
        estimator: ManifoldFlowEstimator,
        prior: Distribution,
        x_o: Tensor | None = None,
    ) -> None:
        if not isinstance(estimator, ManifoldFlowEstimator) or not estimator.has_fixed_manifold:
            raise ValueError(
                "The chart potential needs a manifold flow whose manifold does not depend on "
                "θ; use ExactLikelihoodPotential (manifold_potential chooses it "
                "automatically)."
            )
        self.u: Tensor | None = None
        super().__init__(estimator, prior, x_o)

    def _on_set_x(self) -> None:
        if self._x_batch is None:
            self.u = None
            return
        num_obs, num_trials, d = self._x_batch.shape
        with torch.no_grad():
            u = self.estimator.encode(self._x_batch.reshape(-1, d)).detach()
        check_finite(u, "encoded x_o (u = e(x_o))")
        self.u = u.reshape(num_obs, num_trials, -1)

    def log_likelihood_batch(self, theta: Tensor) -> Tensor:
        if self.u is None:
            raise ValueError("No observed data is available. Use `potential_fn.set_x(x_o)`.")
        num_obs, num_trials, n = self.u.shape
        num_thetas = theta.shape[1]
        u = self.u.unsqueeze(1).expand(num_obs, num_thetas, num_trials, n)
        condition = theta.to(self.dtype).unsqueeze(2).expand(-1, -1, num_trials, -1)
        values = self.estimator.latent_log_prob(
            u.reshape(-1, n), condition.reshape(-1, self.param_dim)
        )
        return values.reshape(num_obs, num_thetas, num_trials).sum(-1)


def manifold_potential(
    estimator: ConditionalDensityEstimator,
    prior: Distribution,
    x_o: Tensor | None = None,
    exact: bool | None = None,
    freeze: bool = True,
    device: str | torch.device | None = None,
) -> ExactLikelihoodPotential:
    """The posterior potential for ``estimator``: the chart potential when it is exact.

    Args:
        estimator: a trained likelihood estimator (a manifold flow, or any sbi estimator,
            which gets :class:`ExactLikelihoodPotential`).
        prior: prior π(θ) (moved to the potential's device if it samples elsewhere).
        x_o: observations (T, d), iid trials (can be set later with ``set_x``).
        exact: force the exact likelihood (True) or the chart potential (False). Default:
            chart potential for fixed-manifold models, exact when the manifold depends on θ
            ("pie-conditional") — with a warning about its cost.
        freeze: evaluate a :func:`frozen_copy` of the estimator (recommended for sampling).
        device: evaluate there (default: the estimator's device); needs ``freeze`` when it
            differs from the estimator's, so that the caller's estimator is not moved.

    Raises:
        ValueError: ``exact=False`` for a model whose manifold depends on θ, or for an
            estimator that is not a manifold flow.
    """
    is_manifold = isinstance(estimator, ManifoldFlowEstimator)
    if exact is None:
        exact = not (is_manifold and estimator.has_fixed_manifold)
        if exact and is_manifold:
            warnings.warn(
                f"Model {estimator.spec.label} conditions the manifold on θ, so x_o "
                "cannot be encoded once: every potential evaluation runs the outer flow on "
                "all num_trials × num_chains pairs (cost grows with d and the outer flow's "
                "size). Prefer a fixed-manifold model for fast NUTS.",
                UserWarning,
                stacklevel=2,
            )
    model = frozen_copy(estimator) if freeze else estimator
    if device is not None and torch.device(device) != estimator_device_dtype(model)[0]:
        if not freeze:
            raise ValueError("device= differs from the estimator's device: needs freeze=True.")
        model.to(device)
    if exact:
        return ExactLikelihoodPotential(model, prior, x_o)
    return ChartPotential(model, prior, x_o)
