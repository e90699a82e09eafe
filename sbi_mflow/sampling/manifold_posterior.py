"""The manifold layer on :class:`~sbi_mflow.sampling.posterior.NUTSPosterior`.

:class:`ManifoldPosterior` adds two things for manifold-learning flows: the choice of
potential (the chart potential on a fixed manifold, where x_o is encoded once and only the
n-dimensional inner flow runs per step; the exact likelihood when the manifold depends on
θ), and a warning for observations far off the learned manifold, against a threshold
computed once (:mod:`~sbi_mflow.sampling.manifold_check`; from the trainer's manifold
check when there is one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.sampling.config import NUTSConfig
from sbi_mflow.sampling.device import resolve_sampling_device
from sbi_mflow.sampling.manifold_check import check_on_manifold, manifold_threshold
from sbi_mflow.sampling.posterior import NUTSPosterior, nuts_posterior
from sbi_mflow.sampling.potential import estimator_device_dtype, manifold_potential

__all__ = ["ManifoldPosterior", "manifold_posterior"]


class ManifoldPosterior(NUTSPosterior):
    """NUTS posterior on a manifold-flow likelihood.

    Args:
        estimator: trained :class:`~sbi_mflow.ManifoldFlowEstimator` (a frozen copy is used).
        prior: prior π(θ) (e.g. sbi's ``BoxUniform``), on any device: it is moved to the
            sampling device with :func:`sbi_mflow.priors.prior_on_device`.
        config: sampler settings (default :class:`NUTSConfig`); ``sampling_device`` "auto"
            runs the chart potential on the CPU (:func:`~sbi_mflow.sampling.device.
            resolve_sampling_device`).
        exact: force the exact likelihood (True) or the chart potential (False); default
            chooses the chart potential when it is exact (fixed manifold).
        param_names: names of θ's components for ArviZ (default ``theta_0 …``).
        reference_x, reference_errors: training data or their reconstruction errors, to
            judge whether x_o is off the manifold (:mod:`sbi_mflow.sampling.manifold_check`).
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
                f"estimator must be a ManifoldFlowEstimator, got {type(estimator).__name__}; "
                "sbi_mflow.nuts_posterior(estimator, prior) samples any sbi likelihood."
            )
        config = (config or NUTSConfig()).replace(**options)
        chart = exact is not True and estimator.has_fixed_manifold
        device = resolve_sampling_device(config.sampling_device, estimator, chart)
        potential = manifold_potential(estimator, prior, exact=exact, device=device)
        super().__init__(potential, config, param_names=param_names,
                         check_convergence=check_convergence,
                         user_device=estimator_device_dtype(estimator)[0])
        self.reference_x = reference_x
        self.reference_errors = reference_errors
        self.check_manifold = check_manifold and estimator.has_fixed_manifold
        self._threshold: tuple[float, str] | None = None
        self._checked_x: Tensor | None = None
        if x_o is not None:
            self.set_default_x(x_o)

    @property
    def estimator(self) -> ManifoldFlowEstimator:
        """The frozen copy of the estimator that the potential evaluates."""
        return self.potential_fn.estimator

    def manifold_threshold(self) -> tuple[float, str]:
        """The reconstruction error above which x is far off the manifold, and its origin;
        computed on first use, then kept."""
        if self._threshold is None:
            reference_x = self.reference_x
            if reference_x is not None:
                reference_x = reference_x.to(self.sampling_device)
            self._threshold = manifold_threshold(self.estimator, reference_x,
                                                 self.reference_errors)
        return self._threshold

    def _on_observations(self, x_batch: Tensor) -> None:
        if not self.check_manifold:
            return
        checked = self._checked_x
        if checked is not None and checked.shape == x_batch.shape and torch.equal(
            checked, x_batch
        ):
            return
        check_on_manifold(self.estimator, x_batch.reshape(-1, x_batch.shape[-1]),
                          threshold=self.manifold_threshold())
        self._checked_x = x_batch


def manifold_posterior(
    estimator,
    prior: Distribution,
    config: NUTSConfig | None = None,
    **options: Any,
) -> NUTSPosterior:
    """NUTS posterior from any trained estimator and prior (no trainer needed).

    A :class:`ManifoldPosterior` for a manifold flow; for any other sbi likelihood
    estimator (sbi's NSF, MAF …) the plain :class:`NUTSPosterior` on its exact likelihood
    (:func:`~sbi_mflow.sampling.posterior.nuts_posterior`).

    ``options``: :class:`NUTSConfig` fields (``num_chains``, ``warmup_steps``,
    ``sampling_device`` …) and the posterior's keywords (``exact``, ``param_names``,
    ``reference_x``, ``x_o`` …).

    Example::

        posterior = sbi_mflow.manifold_posterior(estimator, prior, num_chains=10)
        samples = posterior.sample((1000,), x=x_o)          # x_o (num_trials, d)
        draws = posterior.sample_batched((1000,), x=xs)     # xs (B, d) -> (1000, B, p)
        idata = posterior.sample_arviz(1000, x=x_o)          # ArviZ data with diagnostics
    """
    if isinstance(estimator, ManifoldFlowEstimator):
        return ManifoldPosterior(estimator, prior, config, **options)
    for name in ("exact", "reference_x", "reference_errors", "check_manifold"):
        options.pop(name, None)
    return nuts_posterior(estimator, prior, config, **options)
