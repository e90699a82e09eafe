"""Simulators for tests/test_simulate.py, in a module so Dask workers can import them.

θ's first column holds the row index in these tests, so a simulator can tell which chunk
it was given. Calls are logged to files (one line per call, appended), which works across
worker processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from simulators import ParticleDecay


def row_theta(num_rows: int) -> Tensor:
    """θ (N, 2): the row index, and a value in [0, 1) from torch's generator."""
    return torch.stack([torch.arange(num_rows, dtype=torch.float32),
                        torch.rand(num_rows)], dim=1)


class NoisySimulator:
    """x = (θ₁ + ε₁, θ₁ · ε₂, η), ε from torch's global generator, η from numpy's."""

    def __init__(self, log: str | None = None, fail_row: int | None = None,
                 nan_every: int | None = None) -> None:
        self.log, self.fail_row, self.nan_every = log, fail_row, nan_every

    def __call__(self, theta: Tensor) -> Tensor:
        if self.log:
            with open(self.log, "a") as handle:
                handle.write(f"{int(theta[0, 0])}\n")
        if self.fail_row is not None and bool((theta[:, 0] == self.fail_row).any()):
            raise RuntimeError(f"simulator broke on row {self.fail_row}")
        noise = torch.randn(len(theta), 2)
        eta = torch.from_numpy(np.random.standard_normal((len(theta), 1))).float()
        x = torch.cat([theta[:, 1:] + noise[:, :1], theta[:, 1:] * noise[:, 1:], eta], dim=1)
        if self.nan_every:
            x[theta[:, 0].long() % self.nan_every == 0] = float("nan")
        return x


class KillOnce(NoisySimulator):
    """Kills its process (``os._exit``) the first time it sees ``row``; ``marker`` remembers."""

    def __init__(self, marker: str, row: int) -> None:
        super().__init__()
        self.marker, self.row = marker, row

    def __call__(self, theta: Tensor) -> Tensor:
        if bool((theta[:, 0] == self.row).any()) and not Path(self.marker).exists():
            Path(self.marker).touch()
            os._exit(1)
        return super().__call__(theta)


class InterruptOnce(NoisySimulator):
    """Raises ``KeyboardInterrupt`` the first time it sees ``row`` (like Ctrl-C mid-run)."""

    def __init__(self, marker: str, row: int, log: str) -> None:
        super().__init__(log=log)
        self.marker, self.row = marker, row

    def __call__(self, theta: Tensor) -> Tensor:
        if bool((theta[:, 0] == self.row).any()) and not Path(self.marker).exists():
            Path(self.marker).touch()
            raise KeyboardInterrupt
        return super().__call__(theta)


class DecayWithNumpyNoise:
    """ParticleDecay (torch's generator) plus one column drawn from numpy's generator."""

    def __init__(self) -> None:
        self.decay = ParticleDecay()
        self.prior = self.decay.prior

    def simulate_with_score(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        x, score = self.decay.simulate_with_score(theta)
        eta = torch.from_numpy(np.random.standard_normal((len(theta), 1))).to(x.dtype)
        return torch.cat([x, eta], dim=1), score
