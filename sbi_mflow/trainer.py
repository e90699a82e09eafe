"""``ManifoldNLE``: sbi's NLE with M/D training schedules, SCANDAL and real early stopping.

Schedules (budget ``max_num_epochs`` = E, as in the paper's reference setup):

* ``"sequential"``: E/2 manifold epochs (outer flow + encoder, reconstruction), then E/2
  density epochs (inner flow only, chart NLL with the encoding fixed); separate optimisers.
* ``"alternating"``: E/2 rounds, each a manifold pass then a density pass.
* ``"simultaneous"``: E epochs of the single loss (reconstruction + chart NLL) over all
  parameters; for PIE and sbi's own estimators the loss is −log q(x|θ).

Each phase has its own AdamW optimiser, cosine learning-rate schedule, gradient clipping,
and early stopping on its validation loss that restores the best weights (a real copy).
Data are moved to the training device once; batches are drawn by index on that device.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from sbi.inference import NLE
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from torch import Tensor, nn
from tqdm.auto import tqdm

from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.losses import phase_losses

__all__ = ["ManifoldNLE", "TrainingDivergedError"]

SCHEDULES = ("auto", "sequential", "alternating", "simultaneous")


def _state_copy(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite; the estimator keeps its last good weights."""


class _EarlyStopping:
    """Keeps a real copy of the best weights on the validation loss; stops after patience."""

    def __init__(self) -> None:
        self.best_loss = math.inf
        self.best_state: dict[str, Tensor] | None = None
        self.epochs_since_improvement = 0
        self.stopped = False

    def update(self, loss: float, module: nn.Module, patience: int) -> None:
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = _state_copy(module)
            self.epochs_since_improvement = 0
        else:
            self.epochs_since_improvement += 1
            self.stopped = self.epochs_since_improvement >= patience

    def restore(self, module: nn.Module) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


@dataclass
class _Phase:
    """Optimiser, learning-rate schedule and early stopping of one training phase."""

    name: str
    parameters: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    epochs: int
    epochs_done: int = 0
    stopping: _EarlyStopping = field(default_factory=_EarlyStopping)


@dataclass
class _TrainingState:
    schedule: str
    phases: list[_Phase]
    train_indices: Tensor
    val_indices: Tensor
    options: dict[str, Any] = field(default_factory=dict)
    rounds: int = 0
    rounds_done: int = 0
    round_stopping: _EarlyStopping = field(default_factory=_EarlyStopping)


class ManifoldNLE(NLE):
    """Neural likelihood estimation with manifold-learning flows.

    A drop-in subclass of ``sbi.inference.NLE``: ``append_simulations`` additionally takes
    the joint score t(x, z|θ) = ∇θ log p(x, z|θ), and ``train`` runs the paper's M/D
    schedules (and SCANDAL). Works with any sbi density estimator for the
    ``"simultaneous"`` schedule (e.g. ``likelihood_nn("nsf")`` as the ambient-flow baseline).
    """

    def __init__(
        self,
        prior=None,
        density_estimator: Any = "maf",
        device: str = "cpu",
        logging_level: int | str = "WARNING",
        summary_writer=None,
        tracker=None,
        show_progress_bars: bool = True,
    ) -> None:
        super().__init__(
            prior=prior,
            density_estimator=density_estimator,
            device=device,
            logging_level=logging_level,
            summary_writer=summary_writer,
            tracker=tracker,
            show_progress_bars=show_progress_bars,
        )
        self._score_roundwise: list[Tensor | None] = []
        self._training_state: _TrainingState | None = None
        self._summary["phases"] = []

    # ------------------------------------------------------------------- data
    def append_simulations(
        self,
        theta: Tensor,
        x: Tensor,
        score: Tensor | None = None,
        exclude_invalid_x: bool = False,
        from_round: int = 0,
        algorithm: str = "ManifoldNLE",
        data_device: str | None = None,
    ) -> ManifoldNLE:
        """Store (θ, x) and optionally the joint score t (N, p).

        Rows with NaN/inf in θ, x or t raise a ``ValueError`` naming the counts, or, with
        ``exclude_invalid_x=True``, are dropped together (a warning says how many).
        """
        for name, tensor in (("theta", theta), ("x", x), ("score", score)):
            if tensor is not None and (not isinstance(tensor, Tensor) or tensor.dim() != 2):
                shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor)
                raise ValueError(
                    f"{name} must be a 2-D tensor (num_simulations, dim), got {shape}."
                )
        if theta.shape[0] != x.shape[0]:
            raise ValueError(
                f"theta has {theta.shape[0]} rows but x has {x.shape[0]}; they must match."
            )
        if score is not None and score.shape != theta.shape:
            raise ValueError(
                f"score must have the shape of theta {tuple(theta.shape)} (one ∇θ log p per "
                f"simulation), got {tuple(score.shape)}."
            )
        if self._x_roundwise:
            expected = (self._theta_roundwise[0].shape[1], self._x_roundwise[0].shape[1])
            if (theta.shape[1], x.shape[1]) != expected:
                raise ValueError(
                    f"New simulations have (theta_dim, x_dim) = {(theta.shape[1], x.shape[1])}, "
                    f"earlier ones {expected}."
                )
            if (score is None) != (self._score_roundwise[0] is None):
                raise ValueError("Pass a score for all rounds of simulations or for none.")
        valid = torch.isfinite(theta).all(1) & torch.isfinite(x).all(1)
        if score is not None:
            valid &= torch.isfinite(score).all(1)
        num_invalid = int((~valid).sum())
        if num_invalid:
            if not exclude_invalid_x:
                raise ValueError(
                    f"{num_invalid} of {x.shape[0]} simulations have NaN or inf in theta, x "
                    "or score. Pass exclude_invalid_x=True to drop them (this biases the "
                    "learned likelihood where simulations fail), or replace them."
                )
            warnings.warn(
                f"Dropped {num_invalid} of {x.shape[0]} simulations with NaN or inf in theta, "
                "x or score (rows dropped together).",
                UserWarning,
                stacklevel=2,
            )
            theta, x = theta[valid], x[valid]
            score = None if score is None else score[valid]
        super().append_simulations(
            theta, x, exclude_invalid_x=False, from_round=from_round, algorithm=algorithm,
            data_device=data_device,
        )
        if score is not None:
            score = score.to(self._theta_roundwise[-1].device, torch.float32)
        self._score_roundwise.append(score)
        return self

    def get_simulations_with_score(
        self, starting_round: int = 0
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """All stored (θ, x, score-or-None) from ``starting_round`` on."""
        theta, x, _ = self.get_simulations(starting_round)
        rounds = [i for i, r in enumerate(self._data_round_index) if r >= starting_round]
        scores = [self._score_roundwise[i] for i in rounds]
        score = None if any(s is None for s in scores) else torch.cat(scores)
        return theta, x, score

    # --------------------------------------------------------------- training
    def train(  # noqa: C901 - the options are the point
        self,
        schedule: str = "auto",
        scandal_weight: float = 0.0,
        max_num_epochs: int = 50,
        training_batch_size: int = 100,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        clip_max_norm: float | None = 1.0,
        cosine_schedule: bool = True,
        validation_fraction: float = 0.25,
        stop_after_epochs: int = 20,
        density_epochs: int | None = None,
        resume_training: bool = False,
        retrain_from_scratch: bool = False,
        show_train_summary: bool = False,
        discard_prior_samples: bool = False,
        dataloader_kwargs: dict | None = None,
    ) -> ConditionalDensityEstimator:
        """Train the likelihood estimator q(x|θ) and return it.

        Args:
            schedule: "sequential" (M then D), "alternating", "simultaneous", or "auto"
                (sequential for M-flow/Me-flow, simultaneous otherwise).
            scandal_weight: α of the SCANDAL score term (needs scores in
                ``append_simulations``); applied in the density phase of M/D schedules.
            max_num_epochs: total epoch budget E (split E/2 + E/2 for sequential; E/2
                rounds for alternating; E for simultaneous). Defaults follow the paper.
            training_batch_size, learning_rate, weight_decay, clip_max_norm: AdamW
                settings, per phase.
            cosine_schedule: cosine-anneal each phase's learning rate over its epochs.
            validation_fraction: held-out fraction for early stopping.
            stop_after_epochs: patience of early stopping, per phase; the best weights
                on the validation loss are restored at the end of each phase.
            density_epochs: epochs of the density phase of the sequential schedule
                (default E/2). That phase trains on encodings cached once after the
                manifold phase, so its epochs cost only the n-dimensional inner flow.
            resume_training: continue the stored phases, optimisers, schedules and split
                (``max_num_epochs`` then counts further epochs).
            retrain_from_scratch: rebuild the network first.
        """
        del dataloader_kwargs  # batches are drawn on the device; kept for sbi's signature
        if schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {schedule!r}; choose one of {SCHEDULES}.")
        if not self._data_round_index:
            raise RuntimeError("No simulations found: call append_simulations() first.")
        if scandal_weight < 0:
            raise ValueError(f"scandal_weight must be >= 0, got {scandal_weight}.")
        if max_num_epochs < 1:
            raise ValueError(f"max_num_epochs must be >= 1, got {max_num_epochs}.")
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
        start = int(discard_prior_samples and max(self._data_round_index) > 0)
        self._round = max(self._data_round_index)
        theta, x, score = self.get_simulations_with_score(start)
        if scandal_weight > 0 and score is None:
            raise ValueError(
                "scandal_weight > 0 needs the joint score: append_simulations(theta, x, score=t)."
            )
        resume = resume_training and self._training_state is not None
        if not resume:
            permutation = torch.randperm(theta.shape[0])
            num_train = int((1 - validation_fraction) * theta.shape[0])
            if num_train < 2 or theta.shape[0] - num_train < 1:
                raise ValueError(
                    f"{theta.shape[0]} simulations are too few for validation_fraction="
                    f"{validation_fraction}."
                )
            self.train_indices = permutation[:num_train]
            self.val_indices = permutation[num_train:]
        else:
            self.train_indices = self._training_state.train_indices
            self.val_indices = self._training_state.val_indices
        self._initialize_neural_network(retrain_from_scratch, start)
        estimator = self._neural_net.to(self._device)

        is_manifold = isinstance(estimator, ManifoldFlowEstimator)
        md_capable = is_manifold and estimator.config.model in ("mflow", "meflow")
        if schedule == "auto":
            schedule = "sequential" if md_capable else "simultaneous"
        if schedule in ("sequential", "alternating") and not md_capable:
            raise ValueError(
                f"The {schedule!r} M/D schedule needs an M-flow or Me-flow estimator; "
                "PIE and sbi's own estimators train with schedule='simultaneous'."
            )
        data = [t.to(self._device) for t in (theta, x)]
        data.append(None if score is None else score.to(self._device))
        train_idx = self.train_indices.to(self._device)
        val_idx = self.val_indices.to(self._device)

        if not resume or retrain_from_scratch:
            self._training_state = _TrainingState(
                schedule, self._make_phases(estimator, schedule, max_num_epochs, learning_rate,
                                            weight_decay, cosine_schedule, density_epochs),
                self.train_indices, self.val_indices,
            )
            self._training_state.rounds = self._epochs_per_phase(schedule, max_num_epochs)
        else:
            state = self._training_state
            if state.schedule != schedule:
                raise ValueError(
                    f"Cannot resume a {state.schedule!r} run with schedule {schedule!r}."
                )
            extra = self._epochs_per_phase(schedule, max_num_epochs)
            state.rounds = state.rounds_done + extra
            state.round_stopping.stopped = False
            state.round_stopping.epochs_since_improvement = 0
            for phase in state.phases:
                phase.epochs = phase.epochs_done + extra
                if phase.scheduler is not None:  # a fresh cosine cycle over the new epochs
                    for group in phase.optimizer.param_groups:
                        group["lr"] = group["initial_lr"]
                    phase.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                        phase.optimizer, T_max=extra
                    )
                phase.stopping.stopped = False
                phase.stopping.epochs_since_improvement = 0
        options = dict(
            batch_size=training_batch_size, clip=clip_max_norm, patience=stop_after_epochs,
            scandal_weight=scandal_weight, data=data, train_idx=train_idx, val_idx=val_idx,
        )
        self._training_state.options = options
        phases = self._training_state.phases
        if schedule == "alternating":
            self._run_alternating(estimator, phases, options)
        else:
            for phase in phases:
                if phase.name == "density" and schedule == "sequential":
                    self._run_phase(estimator, phase, self._cached_encodings(estimator, options))
                else:
                    self._run_phase(estimator, phase, options)
        estimator.zero_grad(set_to_none=True)
        estimator.eval()
        epochs = sum(p.epochs_done for p in phases)
        self._summary["epochs_trained"].append(epochs)
        final = (self._training_state.round_stopping if schedule == "alternating"
                 else phases[-1].stopping)
        self._summary["best_validation_loss"].append(final.best_loss)
        self._tracker.log_metric("epochs_trained", epochs, step=self._round + 1)
        self._tracker.flush()
        if show_train_summary:
            for phase in phases:
                print(f"{phase.name}: {phase.epochs_done} epochs, best validation loss "
                      f"{phase.stopping.best_loss:.4f}")
        return estimator

    @staticmethod
    def _epochs_per_phase(schedule: str, max_num_epochs: int) -> int:
        return max_num_epochs if schedule == "simultaneous" else max(1, max_num_epochs // 2)

    def _make_phases(
        self, estimator: ConditionalDensityEstimator, schedule: str, max_num_epochs: int,
        learning_rate: float, weight_decay: float, cosine: bool,
        density_epochs: int | None = None,
    ) -> list[_Phase]:
        epochs = self._epochs_per_phase(schedule, max_num_epochs)
        if density_epochs is not None and density_epochs < 1:
            raise ValueError(f"density_epochs must be >= 1, got {density_epochs}.")
        if schedule == "simultaneous":
            is_md = isinstance(estimator, ManifoldFlowEstimator) and estimator.config.model in (
                "mflow", "meflow")
            groups = [("simultaneous" if is_md else "likelihood", list(estimator.parameters()))]
        else:
            net = estimator.net
            manifold = list(net.outer.parameters())
            if net.encoder is not None:
                manifold += list(net.encoder.parameters())
            groups = [("manifold", manifold), ("density", list(net.inner.parameters()))]
        phases = []
        for name, parameters in groups:
            phase_epochs = epochs
            if name == "density" and schedule == "sequential" and density_epochs is not None:
                phase_epochs = density_epochs
            optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
            scheduler = (
                torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=phase_epochs)
                if cosine else None
            )
            phases.append(_Phase(name, parameters, optimizer, scheduler, phase_epochs))
        return phases

    # ------------------------------------------------------------ epoch loops
    def _batches(self, indices: Tensor, batch_size: int, shuffle: bool):
        if shuffle:
            indices = indices[torch.randperm(indices.numel(), device=indices.device)]
        size = min(batch_size, indices.numel())
        stop = indices.numel() - indices.numel() % size if shuffle else indices.numel()
        for begin in range(0, stop, size):
            yield indices[begin : begin + size]

    def _select(self, data: list[Tensor | None], index: Tensor):
        theta, x, score = data
        return theta[index], x[index], None if score is None else score[index]

    def _train_pass(self, estimator, phase: _Phase, options: dict, epoch_label: str) -> dict:
        estimator.train()
        sums: dict[str, float] = {}
        count = 0
        for index in self._batches(options["train_idx"], options["batch_size"], shuffle=True):
            theta, x, score = self._select(options["data"], index)
            phase.optimizer.zero_grad()
            loss_phase = "latent" if options.get("latent") else phase.name
            terms = phase_losses(estimator, loss_phase, x, theta, score, options["scandal_weight"])
            loss = terms["total"].mean()
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"Non-finite training loss in the {phase.name} phase at {epoch_label}; "
                    "the estimator keeps the weights of its last completed epoch. Try a "
                    "smaller learning_rate or clip_max_norm."
                )
            loss.backward()
            if options["clip"] is not None:
                torch.nn.utils.clip_grad_norm_(phase.parameters, options["clip"])
            phase.optimizer.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach().sum())
            count += index.numel()
        return {k: v / max(count, 1) for k, v in sums.items()}

    def _validation_pass(self, estimator, phase_name: str, options: dict) -> dict:
        estimator.eval()
        phase_name = "latent" if options.get("latent") else phase_name
        sums: dict[str, float] = {}
        count = 0
        with torch.no_grad():
            for index in self._batches(options["val_idx"], 4 * options["batch_size"], False):
                theta, x, score = self._select(options["data"], index)
                terms = phase_losses(estimator, phase_name, x, theta, score,
                                     options["scandal_weight"])
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach().sum())
                count += index.numel()
        return {k: v / max(count, 1) for k, v in sums.items()}

    def _epoch(self, estimator, phase: _Phase, options: dict, label: str) -> float:
        """One training + validation epoch of a phase; returns the validation loss."""
        started = time.time()
        last_good = _state_copy(estimator)
        try:
            train_terms = self._train_pass(estimator, phase, options, label)
        except TrainingDivergedError:
            estimator.load_state_dict(last_good)
            raise
        val_terms = self._validation_pass(estimator, phase.name, options)
        if not math.isfinite(val_terms["total"]):
            estimator.load_state_dict(last_good)
            raise TrainingDivergedError(
                f"Non-finite validation loss in the {phase.name} phase at {label}; the "
                "estimator keeps the weights of its last completed epoch."
            )
        if phase.scheduler is not None:
            phase.scheduler.step()
        phase.epochs_done += 1
        self._record(phase, train_terms, val_terms, time.time() - started)
        return val_terms["total"]

    def _record(self, phase: _Phase, train: dict, val: dict, seconds: float) -> None:
        step = len(self._summary["phases"])
        entry = {"phase": phase.name, "epoch": phase.epochs_done, "seconds": seconds}
        entry.update({f"train_{k}": v for k, v in train.items()})
        entry.update({f"validation_{k}": v for k, v in val.items()})
        self._summary["phases"].append(entry)
        self._summary["training_loss"].append(train["total"])
        self._summary["validation_loss"].append(val["total"])
        self._summary["epoch_durations_sec"].append(seconds)
        for key, value in entry.items():
            if key.startswith(("train_", "validation_")):
                self._tracker.log_metric(f"{phase.name}/{key}", value, step=step)

    def _progress(self, total: int, description: str):
        return tqdm(total=total, desc=description, disable=not self._show_progress_bars,
                    leave=True, dynamic_ncols=True)

    @staticmethod
    def _cached_encodings(estimator, options: dict, batch_size: int = 4096) -> dict:
        """Options whose x is replaced by u = e(x), computed once with the trained manifold."""
        theta, x, score = options["data"]
        estimator.eval()
        with torch.no_grad():
            u = torch.cat([estimator._encode(x[i : i + batch_size], None)
                           for i in range(0, x.shape[0], batch_size)])
        return {**options, "data": [theta, u, score], "latent": True}

    def _run_phase(self, estimator, phase: _Phase, options: dict) -> None:
        stopping = phase.stopping
        with self._progress(phase.epochs - phase.epochs_done, f"{phase.name} phase") as bar:
            while phase.epochs_done < phase.epochs and not stopping.stopped:
                loss = self._epoch(estimator, phase, options, f"epoch {phase.epochs_done + 1}")
                stopping.update(loss, estimator, options["patience"])
                bar.update(1)
                bar.set_postfix(val_loss=f"{loss:.4g}", best=f"{stopping.best_loss:.4g}")
        stopping.restore(estimator)

    def _run_alternating(self, estimator, phases: list[_Phase], options: dict) -> None:
        """Each round: a manifold pass, then a density pass; early stopping on their sum."""
        state = self._training_state
        stopping = state.round_stopping
        with self._progress(state.rounds - state.rounds_done, "alternating M/D") as bar:
            while state.rounds_done < state.rounds and not stopping.stopped:
                label = f"round {state.rounds_done + 1}"
                losses = [self._epoch(estimator, phase, options, label) for phase in phases]
                state.rounds_done += 1
                stopping.update(sum(losses), estimator, options["patience"])
                bar.update(1)
                bar.set_postfix(recon=f"{losses[0]:.4g}", nll=f"{losses[1]:.4g}")
        stopping.restore(estimator)

    # -------------------------------------------------------------- posterior
    def build_posterior(self, density_estimator=None, prior=None, **options: Any):
        """Fixed-manifold NUTS posterior (see :func:`sbi_mflow.manifold_posterior`)."""
        from sbi_mflow.posterior import manifold_posterior

        estimator = density_estimator if density_estimator is not None else self._neural_net
        if estimator is None:
            raise RuntimeError("Train the estimator (or pass density_estimator=) first.")
        prior = prior if prior is not None else self._prior
        if prior is None:
            raise ValueError("No prior: pass prior= here or to ManifoldNLE(prior, ...).")
        if "reference_x" not in options and "reference_errors" not in options:
            # Training data let the posterior judge whether x_o is off the manifold.
            _, x, _ = self.get_simulations()
            options["reference_x"] = x[self.train_indices[:2000]]
        self._posterior = manifold_posterior(estimator, prior, **options)
        return self._posterior
