"""sbi-mflow: manifold-learning flows as neural likelihood estimators for sbi."""

from sbi_mflow import metrics
from sbi_mflow.builders import ManifoldFlowBuilder, build_estimator, manifold_likelihood_nn
from sbi_mflow.config import ManifoldFlowConfig
from sbi_mflow.dimension import DimensionSearchConfig, ManifoldDimEstimate, estimate_manifold_dim
from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.flows.prescribed import PrescribedChart, register_chart
from sbi_mflow.io import load, save
from sbi_mflow.models import MODELS, PRESETS, ModelSpec
from sbi_mflow.ratio import RatioLikelihood, ScoreAugmentedNRE
from sbi_mflow.sampling import (
    ChartPotential,
    ConvergenceWarning,
    ExactLikelihoodPotential,
    ManifoldPosterior,
    ModeDisagreementWarning,
    NUTSConfig,
    NUTSPosterior,
    OffManifoldWarning,
    check_convergence,
    check_on_manifold,
    manifold_posterior,
    manifold_potential,
    nuts_posterior,
    to_inference_data,
)
from sbi_mflow.tracking import NullTracker
from sbi_mflow.trainer import ManifoldNLE, TrainingDivergedError
from sbi_mflow.training import ManifoldCheck, ManifoldStallWarning, NoManifoldWarning, TrainConfig

__all__ = [
    "MODELS",
    "PRESETS",
    "ChartPotential",
    "ConvergenceWarning",
    "DimensionSearchConfig",
    "ExactLikelihoodPotential",
    "ManifoldPosterior",
    "ModeDisagreementWarning",
    "NUTSConfig",
    "NUTSPosterior",
    "NullTracker",
    "SimulationResult",
    "SimulationWarning",
    "OffManifoldWarning",
    "check_convergence",
    "check_on_manifold",
    "manifold_posterior",
    "manifold_potential",
    "metrics",
    "nuts_posterior",
    "to_inference_data",
    "ManifoldFlowBuilder",
    "ManifoldFlowConfig",
    "ManifoldFlowEstimator",
    "ManifoldDimEstimate",
    "ManifoldCheck",
    "ManifoldNLE",
    "ManifoldStallWarning",
    "NoManifoldWarning",
    "ModelSpec",
    "PrescribedChart",
    "RatioLikelihood",
    "ScoreAugmentedNRE",
    "TrainConfig",
    "TrainingDivergedError",
    "build_estimator",
    "estimate_manifold_dim",
    "load",
    "load_simulations",
    "manifold_likelihood_nn",
    "register_chart",
    "save",
    "simulate",
]

__version__ = "0.2.0.dev6"

#: Imported on first use (they need Zarr and Dask, which training and inference do not).
_SIMULATION = ("SimulationResult", "SimulationWarning", "load_simulations", "simulate")


def __getattr__(name: str):
    if name in _SIMULATION:
        from sbi_mflow import simulation

        return getattr(simulation, name)
    raise AttributeError(f"module 'sbi_mflow' has no attribute {name!r}")
