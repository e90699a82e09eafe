"""A training phase: its parameters, loss, data, optimiser, schedule and early stopping.

One loop serves every schedule: :meth:`Phase.run_epoch` makes one pass over the training
batches and one over the validation batches. Loss bookkeeping and the finite check stay on
the device and are read once per epoch, so a step never waits for the host (on a GPU the
step can be compiled and captured as a CUDA graph).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sbi_mflow.losses import Loss
from sbi_mflow.training.config import TrainConfig
from sbi_mflow.training.data import TrainingData
from sbi_mflow.training.stopping import EarlyStopping, state_copy

__all__ = ["EpochResult", "Phase", "TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite; the estimator keeps its last good weights."""


@dataclass
class EpochResult:
    """Mean loss terms of one epoch of a phase, and its wall time."""

    phase: str
    epoch: int
    train: dict[str, float]
    validation: dict[str, float]
    seconds: float
    candidate: int | None = None

    @property
    def validation_loss(self) -> float:
        return self.validation["total"]


def _optimizer(parameters: list[nn.Parameter], config: TrainConfig,
               learning_rate: float) -> torch.optim.Optimizer:
    """AdamW; the fused implementation (one kernel per step) where torch has it."""
    options = dict(lr=learning_rate, weight_decay=config.weight_decay)
    try:
        return torch.optim.AdamW(parameters, fused=True, **options)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(parameters, **options)


@dataclass
class Phase:
    """Parameters trained on one loss, with their own AdamW, cosine schedule and early
    stopping (the paper's M and D phases have one each; Brehmer & Cranmer 2020, §3)."""

    name: str
    parameters: list[nn.Parameter]
    loss: Loss
    data: TrainingData
    epochs: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    stopping: EarlyStopping
    compile: bool = False
    candidate: int | None = None
    epochs_done: int = 0
    _terms: Callable | None = field(default=None, repr=False)

    @classmethod
    def create(cls, name: str, parameters: list[nn.Parameter], loss: Loss, data: TrainingData,
               epochs: int, config: TrainConfig, compile_step: bool = False,
               learning_rate: float | None = None) -> Phase:
        """``learning_rate``: AdamW's (default ``config.learning_rate``)."""
        optimizer = _optimizer(parameters, config, learning_rate or config.learning_rate)
        if getattr(loss, "scandal_weight", 0.0) > 0:
            compile_step = False  # the score term needs double backward, which compile lacks
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
                     if config.cosine_schedule else None)
        return cls(name, parameters, loss, data, epochs, optimizer, scheduler,
                   EarlyStopping(config.stop_after_epochs), compile=compile_step)

    @property
    def finished(self) -> bool:
        return self.epochs_done >= self.epochs or self.stopping.stopped

    def extend(self, extra_epochs: int, config: TrainConfig) -> None:
        """Resume: ``extra_epochs`` more epochs with a fresh cosine cycle over them."""
        self.epochs = self.epochs_done + extra_epochs
        if self.scheduler is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"]
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=extra_epochs)
        self.stopping.restart(config.stop_after_epochs)

    # ------------------------------------------------------------------ steps
    def _loss_terms(self, estimator: nn.Module) -> Callable:
        """The training loss of a batch, compiled once when asked and possible."""
        if self._terms is None:
            terms = functools.partial(self.loss.terms, estimator)
            if self.compile:
                mode = "reduce-overhead" if self.data.x.is_cuda else "default"
                terms = torch.compile(terms, mode=mode, dynamic=False)
            self._terms = terms
        return self._terms

    def _train_pass(self, estimator: nn.Module, config: TrainConfig) -> dict[str, float]:
        estimator.train()
        sums: dict[str, Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=self.data.x.device)
        count = 0
        graphs = self.compile and self.data.x.is_cuda
        for theta, x, score in self.data.train_batches(config.training_batch_size):
            if graphs:  # a new training step: earlier CUDA-graph outputs may be reused
                torch.compiler.cudagraph_mark_step_begin()
            self.optimizer.zero_grad(set_to_none=True)
            terms = self._compute_terms(estimator, x, theta, score)
            loss = terms["total"].mean()
            loss.backward()
            if config.clip_max_norm is not None:
                nn.utils.clip_grad_norm_(self.parameters, config.clip_max_norm, foreach=True)
            self.optimizer.step()
            with torch.no_grad():
                finite &= torch.isfinite(loss)
                for key, value in terms.items():
                    total = value.detach().sum()
                    sums[key] = sums[key] + total if key in sums else total
            count += x.shape[0]
        if not bool(finite):
            raise TrainingDivergedError(
                f"Non-finite training loss in the {self.name} phase at epoch "
                f"{self.epochs_done + 1}; the estimator keeps the weights of its last "
                "completed epoch. Try a smaller learning_rate or clip_max_norm."
            )
        return _means(sums, count)

    def _compute_terms(self, estimator, x, theta, score) -> dict[str, Tensor]:
        terms_fn = self._loss_terms(estimator)
        try:
            return terms_fn(x, theta, score)
        except Exception as error:  # compilation can fail where a toolchain is missing
            if not self.compile:
                raise
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); the "
                          f"{self.name} phase continues without compilation.", stacklevel=3)
            self.compile, self._terms = False, None
            return self._loss_terms(estimator)(x, theta, score)

    def _validation_pass(self, estimator: nn.Module, config: TrainConfig) -> dict[str, float]:
        estimator.eval()
        sums: dict[str, Tensor] = {}
        count = 0
        with torch.no_grad():
            for theta, x, score in self.data.validation_batches(4 * config.training_batch_size):
                for key, value in self.loss.terms(estimator, x, theta, score).items():
                    total = value.detach().sum()
                    sums[key] = sums[key] + total if key in sums else total
                count += x.shape[0]
        return _means(sums, count)

    def run_epoch(self, estimator: nn.Module, config: TrainConfig) -> EpochResult:
        """One training and one validation pass; rolls back and raises on a non-finite loss."""
        started = time.perf_counter()
        last_good = state_copy(estimator)
        try:
            train = self._train_pass(estimator, config)
        except TrainingDivergedError:
            estimator.load_state_dict(last_good)
            raise
        validation = self._validation_pass(estimator, config)
        if not math.isfinite(validation["total"]):
            estimator.load_state_dict(last_good)
            raise TrainingDivergedError(
                f"Non-finite validation loss in the {self.name} phase at epoch "
                f"{self.epochs_done + 1}; the estimator keeps the weights of its last "
                "completed epoch."
            )
        if self.scheduler is not None:
            self.scheduler.step()
        self.epochs_done += 1
        return EpochResult(self.name, self.epochs_done, train, validation,
                           time.perf_counter() - started, self.candidate)


def _means(sums: dict[str, Tensor], count: int) -> dict[str, float]:
    """Per-sample means of the summed terms, read from the device in one transfer."""
    if not sums:
        return {"total": math.nan}
    values = torch.stack([v.to(torch.float64) for v in sums.values()]).tolist()
    return {key: value / max(count, 1) for key, value in zip(sums, values, strict=True)}
