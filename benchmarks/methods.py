"""The estimators a user would pick for a simulator, trained on given simulations.

Each method trains on (θ, x) and returns a :class:`Fitted`, whose ``sample(num, xs)`` draws
``num`` posterior samples for each of B observations ``xs`` (B, T, D) → (num, B, p):

* ``sbi_nle``: sbi's NLE with its NSF, sbi's default MCMC (``slice_np_vectorized``), T iid
  trials through sbi's iid likelihood;
* ``sbi_npe``: sbi's NPE with its NSF; T = 1 directly, T > 1 through sbi's MCMC on its
  posterior-based potential (Σᵢ log q(θ|xᵢ) − (T − 1) log π(θ));
* ``sbi_npse``: sbi's score-based NPE; T > 1 with its default ``iid_method``;
* ``fom``: sbi-mflow's inner flow on the task's true chart (the oracle a learned chart
  approaches), library defaults (the density phase gets the sequential schedule's
  manifold-phase epochs, as the M-flow's);
* ``mflow``, ``meflow``: ``ManifoldNLE`` with the library's defaults; NUTS posterior,
  ``sample_batched`` over the observations.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import sbi_mflow
from sbi_mflow.tracking import NullTracker
from sbi_mflow.training import TrainConfig

__all__ = ["METHODS", "Fitted"]


@dataclass
class Fitted:
    """A trained estimator: its posterior sampler and its training time."""

    sample: Callable[[int, Tensor], Tensor]  # (num, xs (B, T, D)) -> (num, B, p)
    train_seconds: float
    info: dict


def _loop(posterior_sample: Callable[[int, Tensor], Tensor]):
    def sample(num: int, xs: Tensor) -> Tensor:
        return torch.stack([posterior_sample(num, x) for x in xs], dim=1)
    return sample


def sbi_nle(task, theta: Tensor, x: Tensor, seed: int) -> Fitted:
    from sbi.inference import NLE

    torch.manual_seed(seed)
    inference = NLE(task.prior, density_estimator="nsf", show_progress_bars=False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inference.append_simulations(theta, x).train()
    seconds = time.perf_counter() - start
    posterior = inference.build_posterior()

    def sample(num: int, xs: Tensor) -> Tensor:
        if xs.shape[1] == 1:  # one trial each: sbi's batched sampler
            return posterior.sample_batched((num,), x=xs[:, 0], show_progress_bars=False)
        return _loop(lambda n, x_o: posterior.sample((n,), x=x_o,
                                                     show_progress_bars=False))(num, xs)

    return Fitted(sample, seconds, {"epochs": inference.summary["epochs_trained"][-1]})


def sbi_npe(task, theta: Tensor, x: Tensor, seed: int) -> Fitted:
    from sbi.inference import NPE

    torch.manual_seed(seed)
    inference = NPE(task.prior, density_estimator="nsf", show_progress_bars=False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = inference.append_simulations(theta, x).train()
    seconds = time.perf_counter() - start
    direct = inference.build_posterior(estimator)
    mcmc = inference.build_posterior(estimator, sample_with="mcmc")

    def sample(num: int, xs: Tensor) -> Tensor:
        if xs.shape[1] == 1:
            return direct.sample_batched((num,), x=xs[:, 0], show_progress_bars=False)
        return _loop(lambda n, x_o: mcmc.sample((n,), x=x_o, show_progress_bars=False))(
            num, xs)

    return Fitted(sample, seconds, {"epochs": inference.summary["epochs_trained"][-1]})


def sbi_npse(task, theta: Tensor, x: Tensor, seed: int) -> Fitted:
    from sbi.inference import NPSE

    torch.manual_seed(seed)
    inference = NPSE(task.prior, show_progress_bars=False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inference.append_simulations(theta, x).train()
    seconds = time.perf_counter() - start
    posterior = inference.build_posterior()

    def sample_one(num: int, x_o: Tensor) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return posterior.sample((num,), x=x_o, show_progress_bars=False)

    return Fitted(_loop(sample_one), seconds,
                  {"epochs": inference.summary["epochs_trained"][-1]})


def _manifold(model: str, task, theta: Tensor, x: Tensor, seed: int) -> Fitted:
    chart = task.chart() if model == "fom" else None
    torch.manual_seed(seed)
    build = sbi_mflow.manifold_likelihood_nn(model, task.manifold_dim, chart=chart)
    inference = sbi_mflow.ManifoldNLE(task.prior, density_estimator=build,
                                      show_progress_bars=False, tracker=NullTracker())
    # A prescribed chart trains only its density, for as many epochs as the M-flow's
    # density phase under the sequential schedule's defaults.
    options = {} if chart is None else {"density_epochs": TrainConfig().manifold_epochs}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inference.append_simulations(theta, x).train(**options)
    seconds = time.perf_counter() - start
    posterior = inference.build_posterior()

    def sample(num: int, xs: Tensor) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return posterior.sample_batched((num,), x=xs)

    return Fitted(sample, seconds, {"epochs": inference.summary["epochs_trained"][-1]})


def _named(model: str):
    def fit(task, theta: Tensor, x: Tensor, seed: int) -> Fitted:
        return _manifold(model, task, theta, x, seed)
    fit.__name__ = model
    return fit


METHODS: dict[str, Callable[..., Fitted]] = {
    "sbi_nle": sbi_nle,
    "sbi_npe": sbi_npe,
    "sbi_npse": sbi_npse,
    "fom": _named("fom"),
    "mflow": _named("mflow"),
    "meflow": _named("meflow"),
}
