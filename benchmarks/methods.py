"""The estimators a user would pick for a simulator, trained on given simulations.

Each method trains on (θ, x) and returns a :class:`Fitted`, whose ``sample(num, xs)`` draws
``num`` posterior samples for each of B observations ``xs`` (B, T, D) → (num, B, p):

* ``sbi_nle``: sbi's NLE with its NSF, sbi's default MCMC (``slice_np_vectorized``), T iid
  trials through sbi's iid likelihood;
* ``sbi_npe``: sbi's NPE with its NSF; T = 1 directly, T > 1 through sbi's MCMC on its
  posterior-based potential (Σᵢ log q(θ|xᵢ) − (T − 1) log π(θ));
* ``sbi_npse``: sbi's score-based NPE; T > 1 with its default ``iid_method``
  (``"auto_gauss"``); where that raises (its ``linalg.eigh`` of the estimated precisions fails
  to converge), with ``"fnpe"``, the one of sbi's iid methods that estimates no precision,
  as a user would retry (and, once the default has failed on a T, straight away for that
  T's later observations); ``info["iid_fallback"]`` records T and the error;
* ``sbi_nle_true_chart``: sbi's NLE as ``sbi_nle``, on the coordinates u = φ⁻¹(x) of the
  task's true chart (the posterior is the same: the Jacobian of φ does not depend on θ).
  Against ``fom`` it swaps our inner flow and NUTS for sbi's NSF and MCMC on the same
  coordinates, so it says which of the two limits the oracle;
* ``fom``: sbi-mflow's inner flow on the task's true chart (the oracle a learned chart
  approaches), library defaults (its density phase is the M-flow's: until the validation
  loss stops improving);
* ``mflow``, ``meflow``: ``ManifoldNLE`` with the library's defaults; NUTS posterior,
  ``sample_batched`` over the observations;
* ``mflow_long``: ``mflow`` with four times the library's epoch budget (``max_num_epochs``
  200: a manifold phase of 100 epochs instead of 25; the density phase stops early either
  way): against ``mflow`` it says whether the chart is short of training or of data (not
  in the default grid: run it with ``--methods`` where the bar misses);
* ``nsf_on_mflow_chart``: the ``mflow`` row's learned chart with sbi's NSF (NLE) trained
  on its encodings u = e(x) in place of our inner flow, sampled by the same NUTS: against
  ``mflow`` it says whether the inner flow or the learned coordinates are short;
* ``exact_likelihood``: no training; the same NUTS posterior on the task's true likelihood
  (tasks with a tractable one). Against ``fom`` and ``mflow`` it says what the sampler alone
  leaves: the C2ST a perfect likelihood estimator would get.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator
from torch import Tensor

import sbi_mflow
from sbi_mflow.tracking import NullTracker

__all__ = ["METHODS", "NEEDS_CHART", "NEEDS_LIKELIHOOD", "ON_REQUEST", "Fitted"]


@dataclass
class Fitted:
    """A trained estimator: its posterior sampler and its training time."""

    sample: Callable[[int, Tensor], Tensor]  # (num, xs (B, T, D)) -> (num, B, p)
    train_seconds: float
    info: dict
    #: For T > 1, ``sample`` draws for each observation on its own, in order (sbi's
    #: samplers condition on one observation at a time), so a caller may hand it the
    #: observations one by one and keep each one's draws as they land.
    one_observation_at_a_time: bool = False
    #: The trained network, where a run may be resumed by training it anew: the ledger
    #: (:mod:`benchmarks.run_ledger`) checks that the new one has the same parameters.
    network: torch.nn.Module | None = None


def _train_sbi(inference, theta: Tensor, x: Tensor, seed: int):
    """Train an sbi trainer (seeded, quietly): the estimator and the seconds it took."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = inference.append_simulations(theta, x).train()
    return estimator, time.perf_counter() - start


def _sampler(one_trial, many_trials, **options) -> Callable[[int, Tensor], Tensor]:
    """xs (B, T, D) → (num, B, p): ``one_trial`` batched over B when T = 1, else
    ``many_trials`` per observation (with ``options`` for its ``sample``)."""
    def sample(num: int, xs: Tensor) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if xs.shape[1] == 1 and one_trial is not None:
                return one_trial.sample_batched((num,), x=xs[:, 0], show_progress_bars=False)
            return torch.stack([many_trials.sample((num,), x=x_o, show_progress_bars=False,
                                                   **options)
                                for x_o in xs], dim=1)
    return sample


def sbi_nle(task, theta: Tensor, x: Tensor, seed: int) -> Fitted:
    from sbi.inference import NLE

    inference = NLE(task.prior, density_estimator="nsf", show_progress_bars=False)
    estimator, seconds = _train_sbi(inference, theta, x, seed)
    posterior = inference.build_posterior()
    return Fitted(_sampler(posterior, posterior), seconds,
                  {"epochs": inference.summary["epochs_trained"][-1]},
                  one_observation_at_a_time=True, network=estimator)


def _coordinates(encode_rows: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """A chart's encoder on batches of any shape, without gradients: (..., D) -> (..., n),
    from ``encode_rows`` (B, D) -> (B, n)."""
    def encode(points: Tensor) -> Tensor:
        with torch.no_grad():
            u = encode_rows(points.reshape(-1, points.shape[-1]))
        return u.reshape(*points.shape[:-1], -1)
    return encode


def sbi_nle_true_chart(task, theta: Tensor, x: Tensor, seed: int) -> Fitted:
    from sbi.inference import NLE

    if task.chart is None:
        raise ValueError(f"{task.name} exposes no true chart.")
    chart = task.chart()
    encode = _coordinates(lambda rows: chart.encode(rows.double()).float())

    inference = NLE(task.prior, density_estimator="nsf", show_progress_bars=False)
    estimator, seconds = _train_sbi(inference, theta, encode(x), seed)
    posterior = inference.build_posterior()
    sample = _sampler(posterior, posterior)
    return Fitted(lambda num, xs: sample(num, encode(xs)), seconds,
                  {"epochs": inference.summary["epochs_trained"][-1]},
                  one_observation_at_a_time=True, network=estimator)


def sbi_npe(task, theta: Tensor, x: Tensor, seed: int) -> Fitted:
    from sbi.inference import NPE

    inference = NPE(task.prior, density_estimator="nsf", show_progress_bars=False)
    estimator, seconds = _train_sbi(inference, theta, x, seed)
    return Fitted(_sampler(inference.build_posterior(estimator),
                           inference.build_posterior(estimator, sample_with="mcmc")),
                  seconds, {"epochs": inference.summary["epochs_trained"][-1]},
                  one_observation_at_a_time=True, network=estimator)


#: sbi's NPSE ``iid_method`` tried when its default raises ``torch.linalg.LinAlgError``.
NPSE_FALLBACK_IID_METHOD = "fnpe"


def sbi_npse(task, theta: Tensor, x: Tensor, seed: int) -> Fitted:
    from sbi.inference import NPSE

    inference = NPSE(task.prior, show_progress_bars=False)
    estimator, seconds = _train_sbi(inference, theta, x, seed)
    posterior = inference.build_posterior()
    info = {"epochs": inference.summary["epochs_trained"][-1]}
    default = _sampler(None, posterior)
    fallback = _sampler(None, posterior, iid_method=NPSE_FALLBACK_IID_METHOD)

    def sample(num: int, xs: Tensor) -> Tensor:
        if str(xs.shape[1]) in info.get("iid_fallback", {}):  # the default failed on this T
            return fallback(num, xs)
        try:
            return default(num, xs)
        except torch.linalg.LinAlgError as error:
            info.setdefault("iid_fallback", {})[str(xs.shape[1])] = {
                "iid_method": NPSE_FALLBACK_IID_METHOD,
                "default_error": str(error).splitlines()[0][:200]}
            return fallback(num, xs)
    return Fitted(sample, seconds, info, one_observation_at_a_time=True, network=estimator)


def _train_manifold(model: str, task, theta: Tensor, x: Tensor, seed: int, **training):
    """``ManifoldNLE`` with the library's defaults but ``training`` (keyword arguments of
    ``ManifoldNLE.train``): (inference, estimator, seconds)."""
    chart = task.chart() if model == "fom" else None
    torch.manual_seed(seed)
    build = sbi_mflow.manifold_likelihood_nn(model, task.manifold_dim, chart=chart)
    inference = sbi_mflow.ManifoldNLE(task.prior, density_estimator=build,
                                      show_progress_bars=False, tracker=NullTracker())
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = inference.append_simulations(theta, x).train(**training)
    return inference, estimator, time.perf_counter() - start


def _nuts_sampler(posterior) -> Callable[[int, Tensor], Tensor]:
    """``sample_batched`` of a NUTS posterior over all observations: xs (B, T, D)."""
    def sample(num: int, xs: Tensor) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return posterior.sample_batched((num,), x=xs, show_progress_bars=False)
    return sample


#: Fresh simulations on which a chart's reconstruction error is measured, and their seed.
HELD_OUT, HELD_OUT_SEED = 2000, 987_654


def _chart_quality(task, estimator) -> dict:
    """The chart on fresh simulations: mean and median of ‖x − g(e(x))‖₂ (the paper's
    reconstruction error, unclipped), and the data's RMS distance to its mean for scale."""
    generator_state = torch.get_rng_state()
    torch.manual_seed(HELD_OUT_SEED)
    x = task.simulate(task.prior.sample((HELD_OUT,)))
    torch.set_rng_state(generator_state)
    estimator.eval()
    with torch.no_grad():
        errors = estimator.reconstruction_error(x)
    spread = (x - x.mean(0)).norm(dim=-1).pow(2).mean().sqrt()
    return {"reconstruction_mean": errors.mean().item(),
            "reconstruction_median": errors.median().item(), "data_rms": spread.item()}


def _manifold(model: str, task, theta: Tensor, x: Tensor, seed: int, **training) -> Fitted:
    inference, estimator, seconds = _train_manifold(model, task, theta, x, seed, **training)
    return Fitted(_nuts_sampler(inference.build_posterior()), seconds,
                  {"epochs": inference.summary["epochs_trained"][-1],
                   **_chart_quality(task, estimator)})


def nsf_on_mflow_chart(task, theta: Tensor, x: Tensor, seed: int) -> Fitted:
    """The ``mflow`` row's chart (same seed, same training) with sbi's NSF in place of our
    inner flow: NLE's NSF trained on the encodings u = e(x), sampled by the same NUTS on its
    exact likelihood. Against ``mflow`` it says whether the inner flow or the learned
    coordinates limit the posterior."""
    from sbi.inference import NLE

    inference, estimator, manifold_seconds = _train_manifold("mflow", task, theta, x, seed)
    estimator.eval()
    encode = _coordinates(estimator.encode)

    nle = NLE(task.prior, density_estimator="nsf", show_progress_bars=False)
    nsf, nsf_seconds = _train_sbi(nle, theta, encode(x), seed)
    sample = _nuts_sampler(sbi_mflow.nuts_posterior(nsf, task.prior))
    return Fitted(lambda num, xs: sample(num, encode(xs)), manifold_seconds + nsf_seconds,
                  {"epochs": inference.summary["epochs_trained"][-1],
                   "nsf_epochs": nle.summary["epochs_trained"][-1],
                   **_chart_quality(task, estimator)})


class _TrueLikelihood(ConditionalDensityEstimator):
    """A task's log p(x | θ) as an sbi likelihood estimator (float64; not trainable)."""

    def __init__(self, log_likelihood: Callable[[Tensor, Tensor], Tensor], data_dim: int,
                 param_dim: int) -> None:
        # One float64 parameter: the sampler takes its device and dtype from the parameters.
        net = torch.nn.Linear(1, 1, dtype=torch.float64).requires_grad_(False)
        super().__init__(net, torch.Size([data_dim]), torch.Size([param_dim]))
        self.log_likelihood = log_likelihood

    def log_prob(self, input: Tensor, condition: Tensor, **kwargs) -> Tensor:
        """x (S, B, d), θ (B, p) → (S, B)."""
        x = input.double()
        theta = condition.double().expand(x.shape[0], *condition.shape)
        values = self.log_likelihood(x.reshape(-1, x.shape[-1]),
                                     theta.reshape(-1, theta.shape[-1]))
        return values.reshape(x.shape[:2])

    def loss(self, input: Tensor, condition: Tensor, **kwargs) -> Tensor:
        raise NotImplementedError("The true likelihood is not trained.")

    def sample(self, sample_shape: torch.Size, condition: Tensor, **kwargs) -> Tensor:
        raise NotImplementedError("Simulate with the task instead.")


def exact_likelihood(task, theta: Tensor | None, x: Tensor | None, seed: int) -> Fitted:
    if task.log_likelihood is None:
        raise ValueError(f"{task.name} has no tractable likelihood.")
    data_dim = task.observe(1, task.trials[0]).shape[-1]
    param_dim = task.prior.sample((1,)).shape[-1]
    estimator = _TrueLikelihood(task.log_likelihood, data_dim, param_dim)
    return Fitted(_nuts_sampler(sbi_mflow.nuts_posterior(estimator, task.prior)), 0.0, {})


#: ``mflow_long``'s epoch budget: four times ``ManifoldNLE.train``'s default of 50.
LONG_EPOCHS = 200

METHODS: dict[str, Callable[..., Fitted]] = {
    "sbi_nle": sbi_nle,
    "sbi_npe": sbi_npe,
    "sbi_npse": sbi_npse,
    "sbi_nle_true_chart": sbi_nle_true_chart,
    "fom": partial(_manifold, "fom"),
    "mflow": partial(_manifold, "mflow"),
    "meflow": partial(_manifold, "meflow"),
    "mflow_long": partial(_manifold, "mflow", max_num_epochs=LONG_EPOCHS),
    "nsf_on_mflow_chart": nsf_on_mflow_chart,
    "exact_likelihood": exact_likelihood,
}

#: Methods that need the task's true chart (a task without one has no row for them).
NEEDS_CHART = frozenset({"fom", "sbi_nle_true_chart"})
#: Methods that need the task's true likelihood; they use no simulations (budget 0).
NEEDS_LIKELIHOOD = frozenset({"exact_likelihood"})
#: Diagnostic swaps the default grid leaves out; ``--methods`` names them where needed.
ON_REQUEST = frozenset({"mflow_long"})
