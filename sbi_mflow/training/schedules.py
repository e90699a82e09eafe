"""Training schedules: which phases run, on what data, in which order.

* :class:`Sequential` (M/D): the manifold phase (chart and encoder, reconstruction loss),
  then the density phase (inner flow only, chart NLL) on encodings u = e(x) computed once
  with the trained manifold, so its epochs cost only the n-dimensional inner flow; it
  trains until its validation loss stops improving (at most
  ``TrainConfig.density_phase_epochs``);
* :class:`Alternating` (M/D): rounds of one manifold epoch and one density epoch (the
  encodings move, so the density phase encodes each batch); early stopping on the sum of
  the two validation losses;
* :class:`Simultaneous`: one loss over all parameters, chosen from the estimator's parts by
  :func:`sbi_mflow.losses.training_loss` (density on the manifold: reconstruction + chart
  NLL; PIE and sbi's own estimators: −log q).

An estimator whose chart has nothing to learn (a prescribed chart, the "fom" model) skips
the manifold phase: "auto" and "sequential" train only its density, on encodings computed
once.

All run on :class:`~sbi_mflow.training.phase.Phase` and continue where they stopped when
called again with more epochs (``resume_training``).

References:
    Brehmer, Cranmer. Flows for simultaneous manifold learning and density estimation.
    NeurIPS 2020, section 3 (M/D training).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from torch import nn
from tqdm.auto import tqdm

from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.losses import (
    ChartNLL,
    LatentNLL,
    ReconstructionLoss,
    SimultaneousLoss,
    training_loss,
)
from sbi_mflow.training.config import TrainConfig
from sbi_mflow.training.data import TrainingData
from sbi_mflow.training.manifold import (
    ManifoldCheck,
    check_manifold,
    select_candidate,
    warn_check,
)
from sbi_mflow.training.phase import EpochResult, Phase
from sbi_mflow.training.stopping import EarlyStopping, state_copy

__all__ = ["Alternating", "Schedule", "Sequential", "Simultaneous", "make_schedule"]

#: Called after every epoch of every phase.
Recorder = Callable[[EpochResult], None]

#: Totals above this are "train until early stopping" budgets (sbi's default is 2³¹ − 1):
#: the progress bar then counts epochs without a total.
_MAX_SHOWN_TOTAL = 100_000


def supports_md(estimator: ConditionalDensityEstimator) -> bool:
    """Whether M/D training applies: a manifold-learning flow with a density on a
    θ-independent manifold (M-flow, Me-flow, FOM; the density phase encodes x without θ)."""
    return (isinstance(estimator, ManifoldFlowEstimator) and estimator.volume.on_manifold
            and estimator.has_fixed_manifold)


def _progress(total: int, description: str, enabled: bool) -> tqdm:
    shown = total if total <= _MAX_SHOWN_TOTAL else None
    return tqdm(total=shown, desc=description, disable=not enabled, leave=True,
                dynamic_ncols=True, unit="epoch")


def _show(bar: tqdm, result: EpochResult, stopping: EarlyStopping) -> None:
    bar.update(1)
    bar.set_postfix(val=f"{result.validation_loss:.4g}", best=f"{stopping.best_loss:.4g}",
                    patience=f"{stopping.epochs_since_improvement}/{stopping.patience}")


class Schedule:
    """Phases of one estimator, run with a recorder and optional progress bars."""

    name: str

    def __init__(self, estimator: nn.Module, data: TrainingData, config: TrainConfig) -> None:
        self.estimator = estimator
        self.data = data
        self.config = config

    @property
    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def run(self, record: Recorder, progress: bool) -> None:
        raise NotImplementedError

    def extend(self, config: TrainConfig) -> None:
        """Continue with ``config.max_num_epochs`` more epochs (resume training)."""
        raise NotImplementedError

    @property
    def best_validation_loss(self) -> float:
        return self.phases[-1].stopping.best_loss

    def report(self) -> dict:
        """What the training summary records beyond the per-epoch losses."""
        return {}

    def _run_phase(self, phase: Phase, record: Recorder, progress: bool) -> None:
        with _progress(phase.epochs - phase.epochs_done, f"{phase.name} phase",
                       progress) as bar:
            while not phase.finished:
                result = phase.run_epoch(self.estimator, self.config)
                phase.stopping.update(result.validation_loss, self.estimator)
                record(result)
                _show(bar, result, phase.stopping)
        phase.stopping.restore(self.estimator)


class _ManifoldSchedule(Schedule):
    """M/D schedules: a manifold phase chosen among candidate initialisations, checked for
    a stall, and a density phase."""

    def __init__(self, estimator: ManifoldFlowEstimator, data: TrainingData,
                 config: TrainConfig, manifold_epochs: int) -> None:
        super().__init__(estimator, data, config)
        self.manifold_epochs = manifold_epochs
        # One loss object for every candidate phase: a compiled step is then reused instead
        # of compiled again for each candidate (its guards check the loss object).
        self.reconstruction = ReconstructionLoss(estimator.config.reconstruction_weight)
        self.manifold: Phase | None = None  # chosen by _select_manifold on the first run
        self.selection: dict | None = None
        self.check: ManifoldCheck | None = None
        self.attempts = 0

    def _manifold_phase(self, candidate: int) -> Phase:
        phase = Phase.create(
            "manifold", self.estimator.manifold_parameters(), self.reconstruction, self.data,
            self.manifold_epochs, self.config, compile_step=self.config.compile,
            learning_rate=self.config.manifold_learning_rate)
        phase.candidate = candidate if self.config.manifold_candidates > 1 else None
        return phase

    def _reinitialize(self, inner: bool = False) -> None:
        """Fresh initial weights (and permutations) for the chart body and the encoder, and
        for the inner flow if asked, each drawn by the part itself."""
        self.estimator.net.reinitialize(manifold=True, inner=inner)

    def _with_retries(self, run_once: Callable[[], None], reset_inner: bool) -> None:
        """Run the manifold part; after a detected stall start again from fresh weights, up
        to ``manifold_retries`` times, and keep the attempt that reconstructs held-out data
        best (see :mod:`sbi_mflow.training.manifold`)."""
        attempts = []
        for attempt in range(1 + self.config.manifold_retries):
            if attempt > 0:
                self._reinitialize(inner=reset_inner)
                self.manifold = None
            run_once()
            check = check_manifold(self.estimator, self.data, warn=False)
            attempts.append((check.reconstruction, state_copy(self.estimator),
                             self._attempt_state(), check))
            if not check.stalled or check.no_manifold:  # retries cannot add dimensions
                break
        _, weights, phases, self.check = min(attempts, key=lambda a: a[0])
        self.estimator.load_state_dict(weights)
        self._restore_attempt_state(phases)
        self.attempts = len(attempts)
        if self.check.stalled:
            warn_check(self.check, self.estimator.manifold_dim, self.attempts)

    def _attempt_state(self) -> dict:
        return {"manifold": self.manifold, "selection": self.selection}

    def _restore_attempt_state(self, state: dict) -> None:
        self.manifold, self.selection = state["manifold"], state["selection"]

    def _select_manifold(self, record: Recorder, progress: bool) -> None:
        config = self.config
        candidates = config.manifold_candidates
        probe = min(config.probe_epochs, self.manifold_epochs)
        counter = iter(range(candidates))
        losses: list[float] = []
        with _progress(candidates * probe, "manifold candidates", progress
                       and candidates > 1) as bar:

            def run_epochs(phase: Phase, epochs: int) -> list[EpochResult]:
                results = []
                for _ in range(epochs):
                    result = phase.run_epoch(self.estimator, config)
                    phase.stopping.update(result.validation_loss, self.estimator)
                    record(result)
                    _show(bar, result, phase.stopping)
                    results.append(result)
                if results:
                    losses.append(min(r.validation_loss for r in results))
                return results

            self.manifold = select_candidate(
                self.estimator, lambda: self._manifold_phase(next(counter)),
                self._reinitialize, candidates, probe if candidates > 1 else 0,
                run_epochs)
        self.selection = {"candidates": candidates, "probe_epochs": probe,
                          "validation_reconstruction": losses,
                          "chosen": self.manifold.candidate}

    def report(self) -> dict:
        return {"manifold_selection": self.selection, "manifold_attempts": self.attempts,
                "manifold_check": None if self.check is None else self.check.to_dict()}


class Sequential(_ManifoldSchedule):
    """All manifold epochs, then the density phase on cached encodings (only the density
    phase when the chart has nothing to learn)."""

    name = "sequential"

    def __init__(self, estimator: ManifoldFlowEstimator, data: TrainingData,
                 config: TrainConfig) -> None:
        super().__init__(estimator, data, config, config.manifold_epochs)
        self.density = Phase.create(
            "density", list(estimator.inner.parameters()), LatentNLL(config.scandal_weight),
            data, config.density_phase_epochs, config, compile_step=config.compile)

    @property
    def phases(self) -> list[Phase]:
        return [p for p in (self.manifold, self.density) if p is not None]

    def encodings(self, batch_size: int = 4096) -> torch.Tensor:
        """u = e(x) of every training row with the current manifold (N, n)."""
        self.estimator.eval()
        with torch.no_grad():
            return torch.cat([self.estimator.encode_point(chunk).u
                              for chunk in self.data.x.split(batch_size)])

    def run(self, record: Recorder, progress: bool) -> None:
        def manifold_phase() -> None:
            if self.manifold is None:
                self._select_manifold(record, progress)
            self._run_phase(self.manifold, record, progress)

        if not self.estimator.learns_manifold:  # a prescribed chart: exact, nothing to train
            pass
        elif self.manifold is None:
            self._with_retries(manifold_phase, reset_inner=False)
        else:  # resumed: continue the chosen manifold
            manifold_phase()
            self.check = check_manifold(self.estimator, self.data)
        self.density.data = self.data.with_inputs(self.encodings())
        self._run_phase(self.density, record, progress)

    def extend(self, config: TrainConfig) -> None:
        self.config = config
        if self.manifold is not None:
            self.manifold.extend(config.manifold_epochs, config)
        self.density.extend(config.density_phase_epochs, config)


class Alternating(_ManifoldSchedule):
    """Rounds of one manifold epoch and one density epoch (after the candidate probes,
    which train the manifold alone)."""

    name = "alternating"

    def __init__(self, estimator: ManifoldFlowEstimator, data: TrainingData,
                 config: TrainConfig) -> None:
        self.rounds = config.manifold_epochs
        self.rounds_done = 0
        probe = min(config.probe_epochs, self.rounds) if config.manifold_candidates > 1 else 0
        super().__init__(estimator, data, config, self.rounds + probe)
        self.density = Phase.create(
            "density", list(estimator.inner.parameters()), ChartNLL(config.scandal_weight),
            data, self.rounds, config, compile_step=config.compile)
        self.stopping = EarlyStopping(config.stop_after_epochs)

    @property
    def phases(self) -> list[Phase]:
        return [p for p in (self.manifold, self.density) if p is not None]

    @property
    def best_validation_loss(self) -> float:
        return self.stopping.best_loss

    def run(self, record: Recorder, progress: bool) -> None:
        def rounds() -> None:
            if self.manifold is None:
                self._select_manifold(record, progress)
            self._run_rounds(record, progress)

        if self.manifold is None:
            self._with_retries(rounds, reset_inner=True)
        else:  # resumed
            rounds()
            self.check = check_manifold(self.estimator, self.data)

    def _attempt_state(self) -> dict:
        return {**super()._attempt_state(), "density": self.density,
                "stopping": self.stopping, "rounds_done": self.rounds_done}

    def _restore_attempt_state(self, state: dict) -> None:
        super()._restore_attempt_state(state)
        self.density, self.stopping = state["density"], state["stopping"]
        self.rounds_done = state["rounds_done"]

    def _reinitialize(self, inner: bool = False) -> None:
        super()._reinitialize(inner)
        if inner:  # a fresh density phase and round counter for the new attempt
            self.density = Phase.create(
                "density", list(self.estimator.inner.parameters()),
                ChartNLL(self.config.scandal_weight), self.data, self.rounds, self.config,
                compile_step=self.config.compile)
            self.stopping = EarlyStopping(self.config.stop_after_epochs)
            self.rounds_done = 0

    def _run_rounds(self, record: Recorder, progress: bool) -> None:
        with _progress(self.rounds - self.rounds_done, "alternating M/D", progress) as bar:
            while self.rounds_done < self.rounds and not self.stopping.stopped:
                results = [phase.run_epoch(self.estimator, self.config)
                           for phase in self.phases]
                for result in results:
                    record(result)
                self.rounds_done += 1
                total = sum(r.validation_loss for r in results)
                self.stopping.update(total, self.estimator)
                bar.update(1)
                bar.set_postfix(recon=f"{results[0].validation_loss:.4g}",
                                nll=f"{results[1].validation_loss:.4g}",
                                patience=f"{self.stopping.epochs_since_improvement}/"
                                         f"{self.stopping.patience}")
        self.stopping.restore(self.estimator)

    def extend(self, config: TrainConfig) -> None:
        self.config = config
        extra = config.manifold_epochs
        self.rounds = self.rounds_done + extra
        for phase in self.phases:
            phase.extend(extra, config)
        self.stopping.restart(config.stop_after_epochs)


class Simultaneous(Schedule):
    """One phase over all trainable parameters, with the loss of plain training
    (:func:`~sbi_mflow.losses.training_loss`)."""

    name = "simultaneous"

    def __init__(self, estimator: ConditionalDensityEstimator, data: TrainingData,
                 config: TrainConfig) -> None:
        super().__init__(estimator, data, config)
        loss = training_loss(estimator, config.scandal_weight)
        self.phase = Phase.create(
            "simultaneous" if isinstance(loss, SimultaneousLoss) else "likelihood",
            [p for p in estimator.parameters() if p.requires_grad], loss,
            data, config.max_num_epochs, config, compile_step=config.compile)

    @property
    def phases(self) -> list[Phase]:
        return [self.phase]

    def run(self, record: Recorder, progress: bool) -> None:
        self._run_phase(self.phase, record, progress)

    def extend(self, config: TrainConfig) -> None:
        self.config = config
        self.phase.extend(config.max_num_epochs, config)


def make_schedule(estimator: ConditionalDensityEstimator, data: TrainingData,
                  config: TrainConfig) -> Schedule:
    """The one place that maps a schedule name to a schedule ("auto": sequential M/D for a
    density on the manifold (M-flow, Me-flow; FOM: its density phase only), simultaneous
    otherwise)."""
    name = config.schedule
    if name == "auto":
        name = "sequential" if supports_md(estimator) else "simultaneous"
    if name in ("sequential", "alternating") and not supports_md(estimator):
        raise ValueError(
            f"The {name!r} M/D schedule needs an M-flow or Me-flow estimator (a density on "
            "a θ-independent manifold); PIE, conditional manifolds and sbi's own estimators "
            "train with schedule='simultaneous'."
        )
    if name == "alternating" and not estimator.learns_manifold:
        raise ValueError(
            "The 'alternating' schedule alternates manifold and density epochs, but this "
            "estimator's chart is prescribed (nothing to learn): use schedule='auto' or "
            "'sequential' (density only) or 'simultaneous'."
        )
    kinds = {"sequential": Sequential, "alternating": Alternating,
             "simultaneous": Simultaneous}
    return kinds[name](estimator, data, config)
