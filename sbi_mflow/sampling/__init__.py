"""Posterior sampling: Pyro NUTS on sbi likelihood potentials, diagnostics, ArviZ data.

One module per job: :mod:`~sbi_mflow.sampling.config` (:class:`NUTSConfig`),
:mod:`~sbi_mflow.sampling.device` (where the potential runs; θ's unconstraining map),
:mod:`~sbi_mflow.sampling.potential` (potentials of B observations, x encoded once),
:mod:`~sbi_mflow.sampling.manifold_check` (observations off the manifold),
:mod:`~sbi_mflow.sampling.init` (SIR starts), :mod:`~sbi_mflow.sampling.chains` and
:mod:`~sbi_mflow.sampling.lockstep` (running chains), :mod:`~sbi_mflow.sampling.record`
(per-transition record :class:`NUTSInfo`), :mod:`~sbi_mflow.sampling.convergence`
(warnings), :mod:`~sbi_mflow.sampling.arviz_data` (ArviZ conversion),
:mod:`~sbi_mflow.sampling.map` (MAP); :mod:`~sbi_mflow.sampling.posterior`
(:class:`NUTSPosterior`, composing them) and :mod:`~sbi_mflow.sampling.manifold_posterior`
(its manifold layer).
"""

from sbi_mflow.sampling.arviz_data import group_names, load_netcdf, to_inference_data
from sbi_mflow.sampling.chains import ChainResult, run_chains
from sbi_mflow.sampling.config import NUTSConfig
from sbi_mflow.sampling.convergence import (
    ConvergenceSummary,
    ConvergenceWarning,
    ModeDisagreementWarning,
    check_convergence,
)
from sbi_mflow.sampling.manifold_check import OffManifoldWarning, check_on_manifold
from sbi_mflow.sampling.manifold_posterior import ManifoldPosterior, manifold_posterior
from sbi_mflow.sampling.posterior import NUTSPosterior, nuts_posterior
from sbi_mflow.sampling.potential import (
    ChartPotential,
    ExactLikelihoodPotential,
    manifold_potential,
)
from sbi_mflow.sampling.record import NUTSInfo

__all__ = [
    "ChainResult",
    "ChartPotential",
    "ConvergenceSummary",
    "ConvergenceWarning",
    "ExactLikelihoodPotential",
    "ManifoldPosterior",
    "ModeDisagreementWarning",
    "NUTSConfig",
    "NUTSInfo",
    "NUTSPosterior",
    "OffManifoldWarning",
    "check_convergence",
    "check_on_manifold",
    "group_names",
    "load_netcdf",
    "manifold_posterior",
    "manifold_potential",
    "nuts_posterior",
    "run_chains",
    "to_inference_data",
]
