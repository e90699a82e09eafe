"""sbibm task files and the lift of low-dimensional data onto a manifold in R^D.

Observations and reference posterior samples come from the ``sbibm==1.1.0`` wheel (downloaded
once with ``pip download --no-deps`` into ``$SBI_MFLOW_CACHE``, else ``~/.cache/sbi-mflow``);
sbibm's code is never imported (it pins an old sbi).

The lift is a fixed (seeded, θ-independent) smooth injective map φ: R^n → R^D,

    φ(x) = Q [x̂; tanh(W x̂ + b)],  x̂ = (x − c) / s,

with Q a Haar-random D×D rotation, W, b seeded Gaussians and (c, s) a fixed centring and
scale. Its first n coordinates after Qᵀ are x̂, so it is invertible on its image, an
immersion, and y = φ(x) lies on an n-dimensional submanifold of R^D. The density of y w.r.t.
the manifold's volume is p(x | θ) / √det(J_φᵀ J_φ), whose Jacobian factor does not depend
on θ: posteriors given lifted observations are exactly the original ones, so sbibm's
reference posterior samples stay exact.

``Lift.manifold_chart()`` gives φ with its inverse as a torch module (:class:`LiftChart`, an
``sbi_mflow.PrescribedChart``, registered as "sbibm-lift" when this module is imported), so
a flow on the prescribed manifold (``manifold_likelihood_nn("fom", chart=...)``) can be
trained on a lifted task and saved and loaded by name.
"""

from __future__ import annotations

import bz2
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

import sbi_mflow
from simulators.lorenz import cache_dir

__all__ = ["Lift", "LiftChart", "load_task_files", "sbibm_wheel"]

SBIBM_VERSION = "1.1.0"


def sbibm_wheel() -> Path:
    """Path of the cached ``sbibm==1.1.0`` wheel, downloading it once with pip."""
    cache = cache_dir()
    pattern = f"sbibm-{SBIBM_VERSION}-*.whl"
    found = sorted(cache.glob(pattern))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               f"sbibm=={SBIBM_VERSION}", "-d", str(cache)]
    print(f"downloading sbibm=={SBIBM_VERSION} into {cache} ...", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(cache.glob(pattern))
    if result.returncode != 0 or not found:
        raise RuntimeError(
            f"Could not download the sbibm=={SBIBM_VERSION} wheel (needed for the "
            f"observations and reference posterior samples) with\n  {' '.join(command)}\n"
            f"pip said:\n{result.stderr.strip() or result.stdout.strip()}\nDownload it "
            f"elsewhere with `pip download --no-deps sbibm=={SBIBM_VERSION}` and put the .whl "
            f"file into {cache} (or set $SBI_MFLOW_CACHE to its folder)."
        )
    return found[0]


def _read_csv(text: str) -> torch.Tensor:
    rows = [line.split(",") for line in text.strip().splitlines()[1:]]  # skip the header
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float32)


def load_task_files(task: str, num_observation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sbibm's observation x_o (1, n) and reference posterior samples (10000, p) of a task."""
    folder = f"sbibm/tasks/{task}/files/num_observation_{num_observation}"
    with zipfile.ZipFile(sbibm_wheel()) as archive:
        observation = archive.read(f"{folder}/observation.csv").decode()
        reference = bz2.decompress(
            archive.read(f"{folder}/reference_posterior_samples.csv.bz2")).decode()
    return _read_csv(observation), _read_csv(reference)


def _lift(x: Tensor, q: Tensor, w: Tensor, b: Tensor, centre: float, scale: float) -> Tensor:
    """φ(x) in float64, returned in x's dtype (differentiable)."""
    x64 = (x.to(torch.float64) - centre) / scale
    features = torch.cat([x64, torch.tanh(x64 @ w.T + b)], dim=1)
    return (features @ q.T).to(x.dtype)


def _unlift(y: Tensor, q: Tensor, latent_dim: int, centre: float, scale: float) -> Tensor:
    """φ⁻¹ on the image (the first n rotated coordinates), in y's dtype."""
    x64 = (y.to(torch.float64) @ q)[:, :latent_dim]
    return (x64 * scale + centre).to(y.dtype)


class Lift:
    """φ(x) = Q [x̂; tanh(W x̂ + b)], x̂ = (x − centre) / scale: R^n → R^D (see module doc)."""

    def __init__(self, latent_dim: int, dim: int, seed: int, centre: float = 0.0,
                 scale: float = 1.0) -> None:
        generator = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        self.Q = q * torch.sign(torch.diagonal(r))  # unique QR: Haar-distributed rotation
        self.W = torch.randn(dim - latent_dim, latent_dim, generator=generator,
                             dtype=torch.float64)
        self.b = 0.5 * torch.randn(dim - latent_dim, generator=generator, dtype=torch.float64)
        self.latent_dim, self.centre, self.scale = latent_dim, centre, scale
        self.dim, self.seed = dim, seed

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _lift(x, self.Q, self.W, self.b, self.centre, self.scale)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return _unlift(y, self.Q, self.latent_dim, self.centre, self.scale)

    def manifold_chart(self) -> LiftChart:
        """φ and φ⁻¹ as a torch module (the lifted task's prescribed chart)."""
        return LiftChart(self.latent_dim, self.dim, self.seed, self.centre, self.scale)


@sbi_mflow.register_chart("sbibm-lift")
class LiftChart(nn.Module):
    """The chart φ: R^n → R^D of a :class:`Lift` with its inverse (``decode`` = φ,
    ``encode`` = φ⁻¹ of the rotated coordinates), computing in float64. Q, W, b are float64
    buffers (they follow the estimator's device); ``options`` rebuild the same lift."""

    def __init__(self, latent_dim: int, dim: int, seed: int, centre: float = 0.0,
                 scale: float = 1.0) -> None:
        super().__init__()
        lift = Lift(latent_dim, dim, seed, centre, scale)
        self.register_buffer("Q", lift.Q)
        self.register_buffer("W", lift.W)
        self.register_buffer("b", lift.b)
        self.manifold_dim, self.data_dim = latent_dim, dim
        self.options = {"latent_dim": latent_dim, "dim": dim, "seed": seed,
                        "centre": float(centre), "scale": float(scale)}

    def decode(self, u: Tensor) -> Tensor:
        """φ(u): (B, n) -> (B, D)."""
        return _lift(u, self.Q.double(), self.W.double(), self.b.double(),
                     self.options["centre"], self.options["scale"])

    def encode(self, x: Tensor) -> Tensor:
        """φ⁻¹(x): (B, D) -> (B, n)."""
        return _unlift(x, self.Q.double(), self.manifold_dim, self.options["centre"],
                       self.options["scale"])
