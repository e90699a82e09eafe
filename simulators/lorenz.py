"""Samples from the invariant density of the Lorenz attractor (σ=10, β=8/3, ρ=28).

Unconditional (``param_dim = 0``, ``prior = None``), d = 3, n ≈ 2 (the attractor has a
fractal dimension ≈ 2.06, so ``manifold_dim = 2`` is an approximation, as in the paper).

Data are generated once, reproducibly, and cached on disk: ``num_trajectories`` trajectories
from ``x₀ = (1, 1, 1) + 0.1 N(0, I)`` (numpy seed ``seed``) are integrated together with
scipy's ``solve_ivp`` (DOP853, rtol = atol = 1e-9) on ``t ∈ [0, burn_in + duration]``; the
points at ``t ≥ burn_in`` on a grid of spacing ``dt`` are stored as float32 ``.npy`` in
``$SBI_MFLOW_CACHE`` if set, else ``~/.cache/sbi-mflow/``. Sampling draws stored points
uniformly at random (torch's global CPU RNG).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import Simulator

__all__ = ["LorenzAttractor", "cache_dir"]

SIGMA, BETA, RHO = 10.0, 8.0 / 3.0, 28.0


def cache_dir() -> Path:
    """``$SBI_MFLOW_CACHE`` if set, else ``~/.cache/sbi-mflow``."""
    env = os.environ.get("SBI_MFLOW_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sbi-mflow"


def _lorenz_rhs(_t: float, s: np.ndarray) -> np.ndarray:
    x, y, z = s[0::3], s[1::3], s[2::3]
    out = np.empty_like(s)
    out[0::3] = SIGMA * (y - x)
    out[1::3] = x * (RHO - z) - y
    out[2::3] = x * y - BETA * z
    return out


class LorenzAttractor(Simulator):
    """Unconditional simulator of points on the Lorenz attractor.

    ``sample(num)`` returns ``(num, 3)`` float32; ``__call__`` accepts an ``int`` or a
    ``(N, 0)`` tensor (returns ``(N, 3)`` on that tensor's device). ``simulate_with_score``
    returns an empty ``(N, 0)`` score. With the defaults: 10 trajectories × 40,000 points
    (dt = 0.01 after a burn-in of 20 time units) = 400,000 stored points.
    """

    manifold_dim = 2
    data_dim = 3
    param_dim = 0

    def __init__(
        self,
        num_trajectories: int = 10,
        duration: float = 400.0,
        dt: float = 0.01,
        burn_in: float = 20.0,
        seed: int = 711,
    ) -> None:
        if num_trajectories < 1 or duration <= 0 or dt <= 0 or burn_in < 0:
            raise ValueError("num_trajectories >= 1, duration > 0, dt > 0, burn_in >= 0 needed.")
        self.num_trajectories = num_trajectories
        self.duration = float(duration)
        self.dt = float(dt)
        self.burn_in = float(burn_in)
        self.seed = seed
        self._data: Tensor | None = None

    @property
    def default_theta(self) -> Tensor:
        return torch.zeros(0)

    @property
    def cache_file(self) -> Path:
        """Cache path; the name encodes every generation setting."""
        name = (
            f"lorenz_traj{self.num_trajectories}_T{self.duration:g}_dt{self.dt:g}"
            f"_burn{self.burn_in:g}_seed{self.seed}.npy"
        )
        return cache_dir() / name

    def generate(self) -> np.ndarray:
        """Integrate the trajectories; returns float32 ``(num_points, 3)`` (no caching)."""
        from scipy.integrate import solve_ivp

        rng = np.random.default_rng(self.seed)
        x0 = (1.0 + 0.1 * rng.standard_normal((self.num_trajectories, 3))).reshape(-1)
        steps = int(round(self.duration / self.dt))
        t_eval = self.burn_in + self.dt * np.arange(steps)
        sol = solve_ivp(
            _lorenz_rhs,
            (0.0, self.burn_in + self.duration),
            x0,
            method="DOP853",
            t_eval=t_eval,
            rtol=1e-9,
            atol=1e-9,
        )
        if not sol.success:
            raise RuntimeError(f"Lorenz integration failed: {sol.message}")
        pts = sol.y.reshape(self.num_trajectories, 3, -1).transpose(0, 2, 1).reshape(-1, 3)
        return pts.astype(np.float32)

    def data(self) -> Tensor:
        """All stored points ``(num_points, 3)`` float32 (loaded or generated and cached)."""
        if self._data is None:
            path = self.cache_file
            if path.exists():
                arr = np.load(path)
            else:
                arr = self.generate()
                path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as f:
                    np.save(f, arr)
                os.replace(f.name, path)  # atomic: concurrent users never see a partial file
            self._data = torch.from_numpy(arr)
        return self._data

    def sample(self, num: int) -> Tensor:
        """``num`` uniformly random stored points, ``(num, 3)`` float32 on the CPU."""
        if not isinstance(num, int) or isinstance(num, bool) or num < 0:
            raise ValueError(f"num must be a non-negative int, got {num!r}.")
        data = self.data()
        idx = torch.randint(data.shape[0], (num,))
        return data[idx]

    def __call__(self, theta: int | Tensor) -> Tensor:
        if isinstance(theta, Tensor):
            if theta.dim() != 2 or theta.shape[1] != 0:
                raise ValueError(
                    "LorenzAttractor is unconditional: pass an int or a (N, 0) tensor, got "
                    f"shape {tuple(theta.shape)}."
                )
            return self.sample(theta.shape[0]).to(theta.device)
        return self.sample(theta)

    def simulate_with_score(self, theta: int | Tensor) -> tuple[Tensor, Tensor]:
        x = self(theta)
        return x, x.new_zeros(x.shape[0], 0)

    def log_likelihood(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        raise NotImplementedError(
            "LorenzAttractor: the invariant density of the Lorenz attractor is not tractable."
        )

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        raise NotImplementedError(
            "LorenzAttractor: the attractor is only known through samples; no exact distance."
        )

    def reference_posterior(self, x_o: Tensor, num_samples: int) -> Tensor:
        raise NotImplementedError("LorenzAttractor has no parameters, hence no posterior.")
