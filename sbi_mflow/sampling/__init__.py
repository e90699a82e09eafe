"""Posterior sampling: Pyro NUTS on the manifold-flow potential, diagnostics, ArviZ data.

Modules: :mod:`~sbi_mflow.sampling.config` (:class:`NUTSConfig`),
:mod:`~sbi_mflow.sampling.record` (per-transition record),
:mod:`~sbi_mflow.sampling.chains` and :mod:`~sbi_mflow.sampling.lockstep` (running chains),
:mod:`~sbi_mflow.sampling.init` (SIR starts), :mod:`~sbi_mflow.sampling.potential`,
:mod:`~sbi_mflow.sampling.posterior`, :mod:`~sbi_mflow.sampling.convergence` and
:mod:`~sbi_mflow.sampling.manifold_check` (warnings), :mod:`~sbi_mflow.sampling.arviz_data`.
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
from sbi_mflow.sampling.posterior import ManifoldPosterior, manifold_posterior
from sbi_mflow.sampling.potential import (
    ChartPotential,
    ExactLikelihoodPotential,
    ManifoldPotential,
    manifold_potential,
)
from sbi_mflow.sampling.record import Transition

__all__ = [
    "ChainResult",
    "ChartPotential",
    "ConvergenceSummary",
    "ConvergenceWarning",
    "ExactLikelihoodPotential",
    "ManifoldPosterior",
    "ManifoldPotential",
    "ModeDisagreementWarning",
    "NUTSConfig",
    "OffManifoldWarning",
    "Transition",
    "check_convergence",
    "check_on_manifold",
    "group_names",
    "load_netcdf",
    "manifold_posterior",
    "manifold_potential",
    "run_chains",
    "to_inference_data",
]
