"""``ManifoldNLE``: sbi's NLE with M/D training schedules, SCANDAL and real early stopping.

Schedules (budget ``max_num_epochs`` = E, as in the paper's reference setup; see
:mod:`sbi_mflow.training.schedules`):

* ``"sequential"``: E/2 manifold epochs (outer flow + encoder, reconstruction), then E/2
  density epochs (inner flow only, chart NLL on encodings cached after the manifold phase);
* ``"alternating"``: E/2 rounds, each a manifold pass then a density pass;
* ``"simultaneous"``: E epochs of the single loss (reconstruction + chart NLL) over all
  parameters; for PIE and sbi's own estimators the loss is −log q(x|θ).

Each phase has its own AdamW optimiser, cosine learning-rate schedule, gradient clipping,
and early stopping on its validation loss that restores the best weights (a real copy).
Data are moved to the training device once; batches are drawn by index on that device, and
nothing in a training step waits for the host.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from typing import Any

import torch
from sbi.inference import NLE
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from torch import Tensor

from sbi_mflow.priors import prior_on_device
from sbi_mflow.training.config import SMALL_CUDA_BATCH, TrainConfig
from sbi_mflow.training.data import TrainingData
from sbi_mflow.training.phase import EpochResult, TrainingDivergedError
from sbi_mflow.training.schedules import Schedule, make_schedule

__all__ = ["ManifoldNLE", "TrainingDivergedError"]


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
        if prior is not None:
            prior = prior_on_device(prior, torch.zeros(0, device=device).device)
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
        self._schedule: Schedule | None = None
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
    def train(
        self,
        schedule: str = "auto",
        scandal_weight: float = 0.0,
        max_num_epochs: int = 50,
        training_batch_size: int | None = None,
        learning_rate: float | None = None,
        manifold_learning_rate: float | None = None,
        weight_decay: float = 1e-4,
        clip_max_norm: float | None = 1.0,
        cosine_schedule: bool = True,
        validation_fraction: float = 0.25,
        stop_after_epochs: int = 20,
        density_epochs: int | None = None,
        compile: bool | str = "auto",
        manifold_candidates: int = TrainConfig.manifold_candidates,
        candidate_epochs: int | None = None,
        manifold_retries: int = TrainConfig.manifold_retries,
        resume_training: bool = False,
        retrain_from_scratch: bool = False,
        show_train_summary: bool = False,
        discard_prior_samples: bool = False,
        dataloader_kwargs: dict | None = None,
    ) -> ConditionalDensityEstimator:
        """Train the likelihood estimator q(x|θ) and return it.

        Args:
            schedule: "sequential" (M then D), "alternating", "simultaneous", or "auto"
                (sequential for M-flow/Me-flow; for a prescribed chart, "fom", only its
                density phase; simultaneous otherwise).
            scandal_weight: α of the SCANDAL score term (needs scores in
                ``append_simulations``); applied in the density phase of M/D schedules.
            max_num_epochs: epoch budget E: E/2 manifold epochs for sequential (its
                density phase: ``density_epochs``); E/2 rounds for alternating; E for
                simultaneous.
            training_batch_size: rows per step; default 100 on the CPU and 1024 on CUDA.
            learning_rate: AdamW's; default 1e-3 · √(batch / 100).
            manifold_learning_rate: AdamW's in the manifold phase of the M/D schedules;
                default 3 × ``learning_rate`` (the paper's 1e-3 leaves the chart still
                improving at the end of a reduced budget; CHANGELOG.md).
            weight_decay, clip_max_norm: AdamW settings, per phase.
            cosine_schedule: cosine-anneal each phase's learning rate over its epochs.
            validation_fraction: held-out fraction for early stopping.
            stop_after_epochs: patience of early stopping, per phase; the best weights
                on the validation loss are restored at the end of each phase.
            density_epochs: the most epochs of the sequential schedule's density phase
                (default 4 E); it stops earlier when the validation loss has not improved
                for ``stop_after_epochs`` epochs, as sbi's NLE does. That phase trains on
                encodings cached once after the manifold phase, so its epochs cost only
                the n-dimensional inner flow.
            compile: ``torch.compile`` the training step (True, False, or "auto": on CUDA
                only, where it is captured as a CUDA graph); falls back to eager
                execution with a warning where compilation fails.
            manifold_candidates: M/D schedules train this many initialisations of the
                chart for ``candidate_epochs`` each (default: a fifth of the manifold
                phase) and continue with the best by validation reconstruction. After the
                manifold phase the held-out reconstruction is compared with a linear (PCA)
                chart (``summary["manifold_check"]``); when it is not clearly better, a
                ``NoManifoldWarning`` says so if the data's intrinsic dimension is above n
                (full-rank data; no retries), else a ``ManifoldStallWarning`` names the
                numbers and the fixes, after starting the
                manifold phase again from fresh weights up to ``manifold_retries`` times
                (default 0: since every coupling coordinate is transformed, 0.2.0.dev1, no
                stall was seen on the polynomial surface, and on data that converges slowly
                a restart costs a whole manifold phase for little; CHANGELOG.md).
            resume_training: continue the stored phases, optimisers, schedules and split
                (``max_num_epochs`` then counts further epochs).
            retrain_from_scratch: rebuild the network first.
        """
        del dataloader_kwargs  # batches are drawn on the device; kept for sbi's signature
        config = TrainConfig(
            schedule=schedule, scandal_weight=scandal_weight, max_num_epochs=max_num_epochs,
            density_epochs=density_epochs, training_batch_size=training_batch_size,
            learning_rate=learning_rate, manifold_learning_rate=manifold_learning_rate,
            weight_decay=weight_decay,
            clip_max_norm=clip_max_norm, cosine_schedule=cosine_schedule,
            validation_fraction=validation_fraction, stop_after_epochs=stop_after_epochs,
            compile=compile, manifold_candidates=manifold_candidates,
            candidate_epochs=candidate_epochs, manifold_retries=manifold_retries,
        ).resolved(torch.zeros(0, device=self._device).device)
        if not self._data_round_index:
            raise RuntimeError("No simulations found: call append_simulations() first.")
        self._warn_small_cuda_batch(config)
        start = int(discard_prior_samples and max(self._data_round_index) > 0)
        self._training_start = start  # the split below indexes simulations from this round
        self._round = max(self._data_round_index)
        theta, x, score = self.get_simulations_with_score(start)
        if scandal_weight > 0 and score is None:
            raise ValueError(
                "scandal_weight > 0 needs the joint score: append_simulations(theta, x, score=t)."
            )
        resume = resume_training and self._schedule is not None and not retrain_from_scratch
        if resume and config.schedule not in ("auto", self._schedule.name):
            raise ValueError(
                f"Cannot resume a {self._schedule.name!r} run with schedule {schedule!r}."
            )
        if not resume:
            self._split(theta.shape[0], validation_fraction)
        self._initialize_neural_network(retrain_from_scratch, start)
        estimator = self._neural_net.to(self._device)
        if resume:
            self._schedule.extend(config)
        else:
            data = TrainingData.on_device(theta, x, score, self.train_indices,
                                          self.val_indices, torch.device(self._device))
            self._schedule = make_schedule(estimator, data, config)
        self._schedule.run(self._record, self._show_progress_bars)
        estimator.zero_grad(set_to_none=True)
        estimator.eval()
        phases = self._schedule.phases
        epochs = sum(p.epochs_done for p in phases)
        self._summary["epochs_trained"].append(epochs)
        self._summary["best_validation_loss"].append(self._schedule.best_validation_loss)
        self._summary["train_config"] = asdict(config)
        self._summary.update(self._schedule.report())
        check = self._summary.get("manifold_check")
        if check is not None and check.get("error_quantile") is not None:
            # the posterior's off-manifold threshold, kept with the estimator (and its file)
            estimator.reference_reconstruction_error = check["error_quantile"]
        self._tracker.log_metric("epochs_trained", epochs, step=self._round + 1)
        self._tracker.flush()
        if show_train_summary:
            for phase in phases:
                print(f"{phase.name}: {phase.epochs_done} epochs, best validation loss "
                      f"{phase.stopping.best_loss:.4f}")
        return estimator

    def _reference_x(self, rows: int = 2000) -> Tensor | None:
        """Training rows that let the posterior judge whether x_o is off the manifold: those
        of the last training run (its split indexes the rounds it kept), else the newest
        simulations, else None (an estimator trained elsewhere)."""
        if not self._data_round_index:
            return None
        indices = getattr(self, "train_indices", None)
        if indices is None:
            _, x, _ = self.get_simulations()
            return x[-rows:]
        _, x, _ = self.get_simulations(self._training_start)
        return x[indices[:rows]]

    def _split(self, num: int, validation_fraction: float) -> None:
        permutation = torch.randperm(num)
        num_train = int((1 - validation_fraction) * num)
        if num_train < 2 or num - num_train < 1:
            raise ValueError(
                f"{num} simulations are too few for validation_fraction={validation_fraction}."
            )
        self.train_indices = permutation[:num_train]
        self.val_indices = permutation[num_train:]

    def _warn_small_cuda_batch(self, config: TrainConfig) -> None:
        if str(self._device).startswith("cuda") and (
                config.training_batch_size < SMALL_CUDA_BATCH):
            warnings.warn(
                f"Training on CUDA with training_batch_size={config.training_batch_size}: "
                "a GPU step costs about the same up to a few thousand rows, so small batches "
                f"leave it idle. Use >= {SMALL_CUDA_BATCH} (the default on CUDA is 1024).",
                UserWarning, stacklevel=3,
            )

    def _record(self, result: EpochResult) -> None:
        step = len(self._summary["phases"])
        entry = {"phase": result.phase, "epoch": result.epoch, "seconds": result.seconds}
        if result.candidate is not None:
            entry["candidate"] = result.candidate
        entry.update({f"train_{k}": v for k, v in result.train.items()})
        entry.update({f"validation_{k}": v for k, v in result.validation.items()})
        self._summary["phases"].append(entry)
        self._summary["training_loss"].append(result.train["total"])
        self._summary["validation_loss"].append(result.validation["total"])
        self._summary["epoch_durations_sec"].append(result.seconds)
        for key, value in entry.items():
            if key.startswith(("train_", "validation_")):
                self._tracker.log_metric(f"{result.phase}/{key}", value, step=step)

    # -------------------------------------------------------------- posterior
    def build_posterior(
        self,
        density_estimator: ConditionalDensityEstimator | None = None,
        prior=None,
        sample_with: str = "mcmc",
        mcmc_method: str | None = None,
        vi_method: str = "rKL",
        mcmc_parameters: dict[str, Any] | None = None,
        vi_parameters: dict[str, Any] | None = None,
        rejection_sampling_parameters: dict[str, Any] | None = None,
        importance_sampling_parameters: dict[str, Any] | None = None,
        posterior_parameters=None,
        **options: Any,
    ):
        """The posterior, with sbi 0.27's ``NLE.build_posterior`` arguments.

        Default (``mcmc_method`` None, ``"nuts_pyro"`` or ``"hmc_pyro"``, also through
        ``posterior_parameters=MCMCPosteriorParameters(method="nuts_pyro", ...)``): the
        NUTS posterior (:func:`sbi_mflow.manifold_posterior`), vectorised over chains and
        observations, on the chart potential for a fixed-manifold model and on the exact
        likelihood for any other estimator (sbi's NSF/MAF trained here too). sbi's MCMC
        settings are translated (:func:`sbi_mflow.sampling.sbi_arguments.nuts_options`);
        ``options`` are :class:`~sbi_mflow.NUTSConfig` fields and the posterior's keywords.

        Any other method (sbi's ``slice_np_vectorized`` …, ``sample_with="rejection"``,
        ``"vi"``, ``"importance"``): sbi's own posterior on the estimator's exact
        ``log_prob`` (for M-flow the density on the learned manifold, the decoder Jacobian
        included), as ``NLE.build_posterior`` builds it.

        Works before or without :meth:`train` when ``density_estimator=`` is given.
        """
        from sbi_mflow.sampling import manifold_posterior
        from sbi_mflow.sampling.sbi_arguments import nuts_options

        estimator = density_estimator if density_estimator is not None else self._neural_net
        if estimator is None:
            raise RuntimeError("Train the estimator (or pass density_estimator=) first.")
        nuts = nuts_options(sample_with, mcmc_method, mcmc_parameters, posterior_parameters)
        if nuts is None:
            if options:
                raise TypeError(
                    f"Unknown arguments {sorted(options)} for sbi's {sample_with} posterior."
                )
            return super().build_posterior(
                density_estimator, prior, sample_with,
                mcmc_method=mcmc_method or "slice_np_vectorized", vi_method=vi_method,
                mcmc_parameters=mcmc_parameters, vi_parameters=vi_parameters,
                rejection_sampling_parameters=rejection_sampling_parameters,
                importance_sampling_parameters=importance_sampling_parameters,
                posterior_parameters=posterior_parameters,
            )
        prior = prior if prior is not None else self._prior
        if prior is None:
            raise ValueError("No prior: pass prior= here or to ManifoldNLE(prior, ...).")
        options = {**nuts, **options}
        if ("reference_x" not in options and "reference_errors" not in options
                and getattr(estimator, "reference_reconstruction_error", None) is None):
            options["reference_x"] = self._reference_x()
        self._posterior = manifold_posterior(estimator, prior, **options)
        return self._posterior
