"""sbi-mflow: manifold-learning flows as neural likelihood estimators for sbi."""

from sbi_mflow import metrics
from sbi_mflow.builders import ManifoldFlowBuilder, build_estimator, manifold_likelihood_nn
from sbi_mflow.config import MODELS, ManifoldFlowConfig
from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.io import load, save
from sbi_mflow.sampling import (
    ChartPotential,
    ConvergenceWarning,
    ExactLikelihoodPotential,
    ManifoldPosterior,
    ModeDisagreementWarning,
    NUTSConfig,
    OffManifoldWarning,
    check_convergence,
    check_on_manifold,
    manifold_posterior,
    manifold_potential,
    to_inference_data,
)
from sbi_mflow.tracking import NullTracker
from sbi_mflow.trainer import ManifoldNLE, TrainingDivergedError

__all__ = [
    "MODELS",
    "ChartPotential",
    "ConvergenceWarning",
    "ExactLikelihoodPotential",
    "ManifoldPosterior",
    "ModeDisagreementWarning",
    "NUTSConfig",
    "NullTracker",
    "OffManifoldWarning",
    "check_convergence",
    "check_on_manifold",
    "manifold_posterior",
    "manifold_potential",
    "metrics",
    "to_inference_data",
    "ManifoldFlowBuilder",
    "ManifoldFlowConfig",
    "ManifoldFlowEstimator",
    "ManifoldNLE",
    "TrainingDivergedError",
    "build_estimator",
    "load",
    "manifold_likelihood_nn",
    "save",
]

__version__ = "0.1.0"
