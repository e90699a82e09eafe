"""Training of manifold-learning flows: configuration, data, phases and schedules."""

from sbi_mflow.training.config import SCHEDULES, TrainConfig
from sbi_mflow.training.data import TrainingData
from sbi_mflow.training.manifold import (
    ManifoldCheck,
    ManifoldStallWarning,
    NoManifoldWarning,
    check_manifold,
)
from sbi_mflow.training.phase import EpochResult, Phase, TrainingDivergedError
from sbi_mflow.training.schedules import (
    Alternating,
    Schedule,
    Sequential,
    Simultaneous,
    make_schedule,
)
from sbi_mflow.training.stopping import EarlyStopping

__all__ = [
    "SCHEDULES",
    "Alternating",
    "EarlyStopping",
    "EpochResult",
    "ManifoldCheck",
    "ManifoldStallWarning",
    "NoManifoldWarning",
    "Phase",
    "Schedule",
    "Sequential",
    "Simultaneous",
    "TrainConfig",
    "TrainingData",
    "TrainingDivergedError",
    "check_manifold",
    "make_schedule",
]
