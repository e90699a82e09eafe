"""Held-out reconstruction error of a short manifold phase at one candidate dimension n.

An unconditional M-flow chart (:func:`sbi_mflow.manifold_likelihood_nn`, ``"mflow"``,
with the library's architecture defaults) is trained on the training rows with the
manifold phase's loss alone, w · (1/d) ‖x̃ − g(e(x̃))‖² on standardised x̃ (Brehmer &
Cranmer 2020, eq. 8), the optimiser settings of :class:`sbi_mflow.TrainConfig`, and early
stopping on the held-out rows. The score is the held-out error of the best epoch with the
linear (PCA) chart's error at the same n beside it (:func:`sbi_mflow.training.check_manifold`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from sbi_mflow.builders import manifold_likelihood_nn
from sbi_mflow.losses import ReconstructionLoss
from sbi_mflow.training.config import TrainConfig
from sbi_mflow.training.data import TrainingData
from sbi_mflow.training.manifold import check_manifold
from sbi_mflow.training.phase import Phase

__all__ = ["ChartScore", "score_dimension"]


@dataclass(frozen=True)
class ChartScore:
    """One candidate n: held-out errors (mean squared, per standardised coordinate)."""

    manifold_dim: int
    reconstruction: float
    linear: float
    epochs: int
    seconds: float


def score_dimension(x: Tensor, train_indices: Tensor, val_indices: Tensor, manifold_dim: int,
                    epochs: int, device: torch.device, seed: int = 0,
                    progress=None) -> ChartScore:
    """Train a chart of dimension ``manifold_dim`` on ``x[train_indices]`` for at most
    ``epochs`` epochs; its held-out error on ``x[val_indices]``.

    ``progress``: called with no argument after every epoch (a progress bar's update).
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # n = 1 without θ: the (unused) inner flow's conditioner has no inputs
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        estimator = manifold_likelihood_nn("mflow", manifold_dim)(None, x[train_indices].cpu())
    estimator = estimator.to(device)
    data = TrainingData.on_device(torch.zeros(x.shape[0], 0), x, None, train_indices,
                                  val_indices, device)
    config = TrainConfig(max_num_epochs=2 * epochs, stop_after_epochs=max(3, epochs // 4),
                         compile=False).resolved(device)
    phase = Phase.create("manifold", estimator.manifold_parameters(),
                         ReconstructionLoss(estimator.config.reconstruction_weight), data,
                         epochs, config, learning_rate=config.manifold_learning_rate)
    while not phase.finished:
        result = phase.run_epoch(estimator, config)
        phase.stopping.update(result.validation_loss, estimator)
        if progress is not None:
            progress()
    phase.stopping.restore(estimator)
    check = check_manifold(estimator, data, warn=False, diagnose=False)  # n is the question
    return ChartScore(manifold_dim, check.reconstruction, check.linear_baseline,
                      phase.epochs_done, time.perf_counter() - started)
