"""Posterior potentials log π(θ) + Σ_i log p(x_o,i | θ) for manifold-learning flows.

Two potentials follow sbi's ``BasePotential`` interface (``potential(θ (C, p)) -> (C,)``,
the unnormalised log posterior; the MCMC *energy* is its negative):

* :class:`ChartPotential` (fixed manifold: M-flow, Me-flow, FOM, PIE with an unconditional
  manifold). The observations x_o (T, d) are encoded once, u_i = e(x_o,i) (T, n); each
  evaluation costs one n-dimensional inner-flow pass on the T·C pairs (u_i, θ_c):

      log π(θ) + Σ_i [log N(h(u_i; θ)) + log|det ∂h/∂u|(u_i; θ)].

  It differs from the exact potential by the θ-independent Σ_i −½ log det(J_gᵀJ_g)(u_i)
  (density on the manifold) or Σ_i [log N(v_i; 0, ε²) + log|det ∂f/∂x|(x_o,i)] (PIE), so
  posteriors, MCMC acceptance probabilities and likelihood ratios are exact with it.
* :class:`ExactLikelihoodPotential`: Σ_i ``estimator.log_prob(x_o,i, θ)`` + log π(θ), needed
  when the manifold depends on θ (e.g. "pie-conditional"); the outer flow then runs on all
  T·C pairs at every evaluation.

:func:`manifold_potential` picks the right one.
"""

from __future__ import annotations

import copy
import warnings

import torch
from sbi.inference.potentials.base_potential import BasePotential
from torch import Tensor
from torch.distributions import Distribution

from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.priors import prior_on_device
from sbi_mflow.validation import check_finite

__all__ = [
    "ChartPotential",
    "ExactLikelihoodPotential",
    "ManifoldPotential",
    "frozen_copy",
    "manifold_potential",
]


def frozen_copy(estimator: ManifoldFlowEstimator) -> ManifoldFlowEstimator:
    """A deep copy in eval mode with ``requires_grad=False`` on every parameter.

    Sampling then builds autograd graphs only for θ; the caller's estimator is untouched
    (forward hooks registered on it are copied along).
    """
    clone = copy.deepcopy(estimator)
    clone.eval()
    clone.requires_grad_(False)
    return clone


def estimator_device_dtype(estimator: ManifoldFlowEstimator) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the estimator's parameters."""
    parameter = next(estimator.parameters())
    return parameter.device, parameter.dtype


class ManifoldPotential(BasePotential):
    """Shared checks of x_o and θ; subclasses implement :meth:`log_likelihood`.

    The prior is evaluated in its own dtype and the likelihood in the estimator's, so any
    combination (e.g. a float64 ``MultivariateNormal`` prior and a float32 estimator)
    works; the potential has the wider of the two dtypes.

    Args:
        estimator: a trained :class:`~sbi_mflow.ManifoldFlowEstimator` (used as is: pass
            :func:`frozen_copy` of it to keep parameters out of the autograd graph).
        prior: the prior π(θ), a torch ``Distribution`` over θ ∈ R^p; moved to the
            estimator's device with :func:`sbi_mflow.priors.prior_on_device` if needed.
        x_o: observations (T, d) (or (d,) for one trial), treated as iid trials.
    """

    def __init__(
        self,
        estimator: ManifoldFlowEstimator,
        prior: Distribution,
        x_o: Tensor | None = None,
    ) -> None:
        if not isinstance(estimator, ManifoldFlowEstimator):
            raise TypeError(
                f"estimator must be a ManifoldFlowEstimator, got {type(estimator).__name__}."
            )
        if estimator.param_dim == 0:
            raise ValueError("The estimator is unconditional (param_dim = 0): no θ to infer.")
        self.estimator = estimator
        device, self.dtype = estimator_device_dtype(estimator)
        prior = prior_on_device(prior, device)
        self.prior_dtype = prior.sample((1,)).dtype
        super().__init__(prior, x_o=None, device=device)
        if x_o is not None:
            self.set_x(x_o)

    @property
    def param_dim(self) -> int:
        return self.estimator.param_dim

    @property
    def num_trials(self) -> int:
        return self.x_o.shape[0]

    def check_x(self, x_o: Tensor) -> Tensor:
        """Validate observations: (T, d) or (d,) → (T, d) on the estimator's device/dtype."""
        d = self.estimator.data_dim
        if not isinstance(x_o, Tensor):
            x_o = torch.as_tensor(x_o)
        if x_o.dim() == 1:
            x_o = x_o.unsqueeze(0)
        if x_o.dim() != 2 or x_o.shape[-1] != d or x_o.shape[0] < 1:
            raise ValueError(
                f"x_o must have shape (num_trials, {d}) (iid trials as rows) or ({d},), "
                f"got {tuple(x_o.shape)}."
            )
        if not torch.is_floating_point(x_o):
            x_o = x_o.to(self.dtype)
        check_finite(x_o, "x_o")
        return x_o.to(self.device, self.dtype)

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

    def set_x(self, x_o: Tensor | None, x_is_iid: bool | None = True) -> None:
        if x_is_iid is False:
            raise ValueError(
                "sbi-mflow potentials treat the rows of x_o as iid trials; batched "
                "(non-iid) x is not supported."
            )
        self._x_o = None if x_o is None else self.check_x(x_o)
        self._x_is_iid = True
        self._on_set_x()

    def _on_set_x(self) -> None:
        """Hook for subclasses (e.g. encode x_o once)."""

    def log_likelihood(self, theta: Tensor) -> Tensor:
        """Σ_i log-likelihood of the trials (up to a θ-independent constant): (C, p) -> (C,)."""
        raise NotImplementedError

    def __call__(self, theta: Tensor, track_gradients: bool = True) -> Tensor:
        """Unnormalised log posterior log π(θ) + Σ_i log p(x_o,i | θ): θ (C, p) -> (C,).

        −inf outside the prior's support. Gradients w.r.t. θ only if ``track_gradients``.
        """
        theta = self.check_theta(theta)
        with torch.set_grad_enabled(track_gradients):
            log_prior = self.prior.log_prob(theta.to(self.prior_dtype))
            log_lik = self.log_likelihood(theta)
            dtype = torch.promote_types(log_prior.dtype, log_lik.dtype)
            return log_prior.to(dtype) + log_lik.to(dtype)

    def to(self, device: str | torch.device) -> ManifoldPotential:
        """Move the estimator, the prior and x_o to ``device`` (x_o is encoded again)."""
        self.estimator.to(device)
        self.device = str(estimator_device_dtype(self.estimator)[0])  # sbi keeps a string
        self.prior = prior_on_device(self.prior, self.device)
        if self._x_o is not None:
            self._x_o = self._x_o.to(self.device)
        self._on_set_x()
        return self


class ChartPotential(ManifoldPotential):
    """Fixed-manifold potential: x_o encoded once, then only the inner flow h(·; θ) runs.

    ``u`` holds the encoded observations (T, n). For θ (C, p) the chart log-likelihood of
    all T·C pairs is evaluated in one batch, ``latent_log_prob(u.repeat(C, 1),
    θ.repeat_interleave(T, 0))``, and summed over trials.
    """

    def __init__(
        self,
        estimator: ManifoldFlowEstimator,
        prior: Distribution,
        x_o: Tensor | None = None,
    ) -> None:
        if not estimator.has_fixed_manifold:
            raise ValueError(
                f"Model {estimator.spec.label} has a θ-dependent manifold, so the chart "
                "potential is not exact; use ExactLikelihoodPotential (manifold_potential "
                "chooses it automatically)."
            )
        self.u: Tensor | None = None
        super().__init__(estimator, prior, x_o)

    def _on_set_x(self) -> None:
        if self._x_o is None:
            self.u = None
            return
        with torch.no_grad():
            self.u = self.estimator.encode(self._x_o).detach()
        check_finite(self.u, "encoded x_o (u = e(x_o))")

    def log_likelihood(self, theta: Tensor) -> Tensor:
        if self.u is None:
            raise ValueError("No observed data is available. Use `potential_fn.set_x(x_o)`.")
        num_thetas, num_trials = theta.shape[0], self.u.shape[0]
        u = self.u.repeat(num_thetas, 1)
        condition = theta.to(self.dtype).repeat_interleave(num_trials, dim=0)
        values = self.estimator.latent_log_prob(u, condition)
        return values.reshape(num_thetas, num_trials).sum(-1)


class ExactLikelihoodPotential(ManifoldPotential):
    """Exact potential log π(θ) + Σ_i ``estimator.log_prob(x_o,i, θ)``.

    Runs the full likelihood (outer flow, and the decoder Jacobian for M-flow / Me-flow)
    for all T·C pairs at every evaluation.
    """

    def log_likelihood(self, theta: Tensor) -> Tensor:
        x_o = self.x_o
        num_thetas, num_trials = theta.shape[0], x_o.shape[0]
        x = x_o.unsqueeze(1).expand(num_trials, num_thetas, x_o.shape[-1])
        values = self.estimator.log_prob(x, theta.to(self.dtype))  # (T, C)
        return values.sum(0)


def manifold_potential(
    estimator: ManifoldFlowEstimator,
    prior: Distribution,
    x_o: Tensor | None = None,
    exact: bool | None = None,
    freeze: bool = True,
    device: str | torch.device | None = None,
) -> ManifoldPotential:
    """The posterior potential for ``estimator``: chart potential when it is exact.

    Args:
        estimator: trained estimator.
        prior: prior π(θ) (moved to the potential's device if it samples elsewhere).
        x_o: observations (T, d), iid trials (can be set later with ``set_x``).
        exact: force the exact likelihood (True) or the chart potential (False). Default:
            chart potential for fixed-manifold models, exact when the manifold depends on θ
            ("pie-conditional") — with a warning about its cost.
        freeze: evaluate a :func:`frozen_copy` of the estimator (recommended for sampling).
        device: evaluate there (default: the estimator's device); needs ``freeze`` when it
            differs from the estimator's, so that the caller's estimator is not moved.

    Raises:
        ValueError: ``exact=False`` for a model whose manifold depends on θ.
    """
    if not isinstance(estimator, ManifoldFlowEstimator):
        raise TypeError(
            f"estimator must be a ManifoldFlowEstimator, got {type(estimator).__name__}."
        )
    if exact is None:
        exact = not estimator.has_fixed_manifold
        if exact:
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
