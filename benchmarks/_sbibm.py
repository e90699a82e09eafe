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
"""

from __future__ import annotations

import bz2
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from simulators.lorenz import cache_dir

__all__ = ["Lift", "load_task_files", "sbibm_wheel"]

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x64 = (x.to(torch.float64) - self.centre) / self.scale
        features = torch.cat([x64, torch.tanh(x64 @ self.W.T + self.b)], dim=1)
        return (features @ self.Q.T).to(x.dtype)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        x64 = (y.to(torch.float64) @ self.Q)[:, : self.latent_dim]
        return (x64 * self.scale + self.centre).to(y.dtype)
