"""Steps of the command-line jobs: simulate, train, infer, write results.

Each run directory holds ``model.pt`` (state dict + config, see :mod:`sbi_mflow.io`) and
``run.json`` (plain metadata: the simulator or the prior box, the training summary), so
``sbi-mflow infer`` can rebuild the prior without pickled objects.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sbi.utils import BoxUniform
from torch import Tensor
from tqdm.auto import tqdm

import sbi_mflow
from simulators import ConditionalSphere, ParticleDecay, PolynomialSurface

__all__ = [
    "SIMULATORS",
    "CommandError",
    "box_prior_metadata",
    "load_array",
    "make_simulator",
    "prepare_output",
    "prior_from_run",
    "simulate",
    "train_model",
    "write_json",
]

#: Simulators the command line knows by name.
SIMULATORS = {
    "polynomial-surface": PolynomialSurface,
    "conditional-sphere": ConditionalSphere,
    "particle-decay": ParticleDecay,
}


class CommandError(Exception):
    """A user-facing problem: printed without a traceback, exit status 2."""


def make_simulator(name: str):
    if name not in SIMULATORS:
        raise CommandError(f"Unknown simulator {name!r}; choose one of {sorted(SIMULATORS)}.")
    return SIMULATORS[name]()


def prepare_output(path: str | Path, force: bool) -> Path:
    """Create the output folder; refuse a non-empty one unless ``force``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CommandError(f"Output path {path} exists and is not a folder.")
    if path.exists() and any(path.iterdir()) and not force:
        raise CommandError(
            f"Output folder {path} exists and is not empty; pass --force to overwrite the "
            "files this command writes (other files are left alone)."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_array(path: str | Path, name: str) -> Tensor:
    """A float32 (N, k) tensor from a .npy or .pt file."""
    path = Path(path)
    if not path.is_file():
        raise CommandError(f"{name} file {path} does not exist.")
    if path.suffix == ".npy":
        values = torch.as_tensor(np.load(path, allow_pickle=False))
    elif path.suffix in (".pt", ".pth"):
        values = torch.load(path, weights_only=True)
        if not isinstance(values, Tensor):
            raise CommandError(f"{name} file {path} must hold a single tensor.")
    else:
        raise CommandError(f"{name} file {path} must be .npy or .pt, got {path.suffix!r}.")
    if values.dim() == 1:
        values = values.unsqueeze(1)
    if values.dim() != 2:
        raise CommandError(f"{name} in {path} must be 2-D (N, k), got {tuple(values.shape)}.")
    if not torch.isfinite(values).all():
        raise CommandError(f"{name} in {path} contains NaN or infinite values.")
    return values.float()


def simulate(simulator, num: int, with_score: bool, seed: int, chunk: int = 1000,
             progress: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """θ ~ prior, x ~ simulator(θ) (and the joint score), in chunks with a progress bar."""
    torch.manual_seed(seed)
    theta = simulator.prior.sample((num,))
    xs, scores = [], []
    for start in tqdm(range(0, num, chunk), desc="simulating", disable=not progress,
                      total=math.ceil(num / chunk)):
        block = theta[start : start + chunk]
        if with_score:
            x, t = simulator.simulate_with_score(block)
            scores.append(t)
        else:
            x = simulator(block)
        xs.append(x)
    return theta, torch.cat(xs), torch.cat(scores) if with_score else None


def train_model(theta: Tensor, x: Tensor, score: Tensor | None, prior, model: str,
                manifold_dim: int | str, epochs: int, schedule: str, scandal_weight: float,
                device: str, progress: bool, training: dict[str, Any] | None = None,
                **options: Any):
    """Train with :class:`sbi_mflow.ManifoldNLE`; returns (inference, estimator).

    ``training``: extra keyword arguments of ``ManifoldNLE.train``; ``options``: those of
    :func:`sbi_mflow.manifold_likelihood_nn`.
    """
    if isinstance(manifold_dim, int) and manifold_dim >= x.shape[1]:
        raise CommandError(f"--manifold-dim {manifold_dim} must be smaller than d = {x.shape[1]}.")
    try:
        build = sbi_mflow.manifold_likelihood_nn(model, manifold_dim, **options)
    except ValueError as error:  # e.g. "fom" without its chart: a user-facing message
        raise CommandError(str(error)) from error
    inference = sbi_mflow.ManifoldNLE(prior, density_estimator=build, device=device,
                                      show_progress_bars=progress)
    inference.append_simulations(theta, x, score=score)
    training = dict(training or {})
    if schedule not in ("auto", "sequential") or not build.spec.density_on_manifold:
        training.pop("density_epochs", None)  # only the sequential M/D schedule has it
    estimator = inference.train(schedule=schedule, max_num_epochs=epochs,
                                scandal_weight=scandal_weight, **training)
    return inference, estimator


def box_prior_metadata(theta: Tensor, low: list[float] | None,
                       high: list[float] | None) -> dict[str, list[float]]:
    """Prior box from explicit bounds or, failing those, the range of the training θ."""
    if (low is None) != (high is None):
        raise CommandError("Give both --prior-low and --prior-high, or neither.")
    if low is None:
        low, high = theta.min(0).values.tolist(), theta.max(0).values.tolist()
    if len(low) != theta.shape[1] or len(high) != theta.shape[1]:
        raise CommandError(f"The prior bounds need {theta.shape[1]} values each.")
    if any(lo >= hi for lo, hi in zip(low, high, strict=True)):
        raise CommandError("Every --prior-low must be below its --prior-high.")
    return {"low": [float(v) for v in low], "high": [float(v) for v in high]}


def prior_from_run(run: dict[str, Any], device: str = "cpu"):
    """Rebuild the prior recorded in ``run.json``."""
    if run.get("simulator"):
        simulator = make_simulator(run["simulator"])
        return simulator.prior, simulator
    box = run.get("prior_box")
    if not box:
        raise CommandError("run.json records neither a simulator nor a prior box.")
    low = torch.tensor(box["low"], device=device)
    high = torch.tensor(box["high"], device=device)
    return BoxUniform(low, high, device=device), None


def write_json(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(json.dumps(values, indent=2, default=float) + "\n")
    return path
