"""``TrainConfig``: every setting of a ``ManifoldNLE.train`` call, validated in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

__all__ = ["DENSITY_EPOCHS_FACTOR", "MANIFOLD_RATE_FACTOR", "SCHEDULES", "TrainConfig"]

SCHEDULES = ("auto", "sequential", "alternating", "simultaneous")

#: Batch size used when none is given: small batches on the CPU (one step is cheap and
#: many steps per epoch help), large ones on a GPU, where a step costs about the same
#: for 128 or 4096 rows.
DEFAULT_BATCH = {"cpu": 100, "cuda": 1024}
#: Reference batch of the default learning rate 1e-3 (the paper's setting).
REFERENCE_BATCH = 100
#: The manifold phase's learning rate, as a multiple of ``learning_rate`` when not given:
#: with the paper's 1e-3 the chart was still improving when a reduced budget ran out, and
#: 3x gave better charts on every benchmark measured (CHANGELOG.md, 0.2.0.dev2).
MANIFOLD_RATE_FACTOR = 3.0
#: The density phase's epoch limit, as a multiple of ``max_num_epochs`` when not given. The
#: phase stops earlier when its validation loss stops improving, as sbi's NLE does. Its
#: epochs cost only the n-dimensional inner flow; at E/2 = 25 epochs the inner flow of
#: lifted SLCP was far from trained (held-out log-likelihood 2.4 nats per simulation below
#: the one this default reached, best epoch 128; CHANGELOG.md, 0.2.0.dev5).
DENSITY_EPOCHS_FACTOR = 4
#: Below this batch size a CUDA step is bound by launch overhead (a warning says so).
SMALL_CUDA_BATCH = 512


@dataclass
class TrainConfig:
    """Settings of one training call (see :meth:`sbi_mflow.ManifoldNLE.train`).

    ``training_batch_size`` and ``learning_rate`` may be None: :meth:`resolved` then picks
    100 on the CPU and 1024 on CUDA, with the learning rate 1e-3 · √(batch / 100)
    (square-root scaling, which keeps Adam's update noise about constant), and
    ``manifold_learning_rate`` (the manifold phase of the M/D schedules) ``MANIFOLD_RATE_FACTOR``
    times that.

    ``manifold_candidates`` initialisations of the chart are each trained for
    ``candidate_epochs`` (default: a fifth of the manifold phase) before the best one, by
    validation reconstruction, is trained on; when the trained manifold still fails the
    stall check, the manifold phase starts again from fresh weights, up to
    ``manifold_retries`` times, and the better attempt is kept (M/D schedules; see
    :mod:`sbi_mflow.training.manifold`).

    The density phase of the sequential schedule (a prescribed chart's only phase) trains
    for at most ``density_epochs`` epochs (default ``DENSITY_EPOCHS_FACTOR`` ×
    ``max_num_epochs``) and stops when its validation loss has not improved for
    ``stop_after_epochs`` epochs.
    """

    schedule: str = "auto"
    scandal_weight: float = 0.0
    max_num_epochs: int = 50
    density_epochs: int | None = None
    training_batch_size: int | None = None
    learning_rate: float | None = None
    manifold_learning_rate: float | None = None
    weight_decay: float = 1e-4
    clip_max_norm: float | None = 1.0
    cosine_schedule: bool = True
    validation_fraction: float = 0.25
    stop_after_epochs: int = 20
    compile: bool | str = "auto"
    manifold_candidates: int = 3
    candidate_epochs: int | None = None
    manifold_retries: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; choose one of {SCHEDULES}.")
        if self.scandal_weight < 0:
            raise ValueError(f"scandal_weight must be >= 0, got {self.scandal_weight}.")
        for name in ("max_num_epochs", "stop_after_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.density_epochs is not None and self.density_epochs < 1:
            raise ValueError(f"density_epochs must be >= 1, got {self.density_epochs}.")
        if self.training_batch_size is not None and self.training_batch_size < 1:
            raise ValueError(
                f"training_batch_size must be >= 1, got {self.training_batch_size}.")
        for name in ("learning_rate", "manifold_learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}.")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction}.")
        if self.clip_max_norm is not None and not self.clip_max_norm > 0:
            raise ValueError(f"clip_max_norm must be > 0 or None, got {self.clip_max_norm}.")
        if self.manifold_candidates < 1:
            raise ValueError(
                f"manifold_candidates must be >= 1, got {self.manifold_candidates}.")
        if self.manifold_retries < 0:
            raise ValueError(f"manifold_retries must be >= 0, got {self.manifold_retries}.")
        if self.candidate_epochs is not None and self.candidate_epochs < 1:
            raise ValueError(f"candidate_epochs must be >= 1, got {self.candidate_epochs}.")
        if self.compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {self.compile!r}.")

    def resolved(self, device: torch.device) -> TrainConfig:
        """A copy with the batch size, learning rates and compilation fixed for ``device``."""
        batch = self.training_batch_size or DEFAULT_BATCH.get(device.type, 100)
        rate = self.learning_rate or 1e-3 * math.sqrt(batch / REFERENCE_BATCH)
        manifold_rate = self.manifold_learning_rate or MANIFOLD_RATE_FACTOR * rate
        compile_step = self.compile
        if compile_step == "auto":
            compile_step = device.type == "cuda"
        return replace(self, training_batch_size=batch, learning_rate=rate,
                       manifold_learning_rate=manifold_rate, compile=bool(compile_step))

    @property
    def manifold_epochs(self) -> int:
        """Epochs of the manifold phase (rounds of the alternating schedule): E / 2."""
        return max(1, self.max_num_epochs // 2)

    @property
    def density_phase_epochs(self) -> int:
        """Epoch limit of the sequential schedule's density phase (early stopping ends it
        sooner)."""
        return self.density_epochs or DENSITY_EPOCHS_FACTOR * self.max_num_epochs

    @property
    def probe_epochs(self) -> int:
        """Epochs each candidate initialisation is trained before one is chosen."""
        return self.candidate_epochs or max(1, self.manifold_epochs // 5)
