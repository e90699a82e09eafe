"""Chunks of a simulation run and the work done for one chunk.

θ (N, p) is cut into ``ceil(N / chunk_size)`` chunks of consecutive rows. Chunk k runs with
torch's, numpy's and Python's global generators seeded from ``(seed, k)`` through numpy's
:class:`~numpy.random.SeedSequence` (entropy ``seed``, spawn key ``(k,)``): independent,
well-mixed streams per chunk, so the rows of chunk k are the same whichever process runs it,
in whatever order, however often it is retried.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ChunkOutput", "ChunkPlan", "chunk_seeds", "run_chunk", "seeded_generators"]

# The generators are global to a process: chunks sharing a process (threads of one Dask
# worker, or the caller's process) take turns, so each sees only its own stream.
_GENERATORS_LOCK = threading.RLock()


@dataclass(frozen=True)
class ChunkPlan:
    """Rows ``[k * chunk_size, min((k + 1) * chunk_size, num_rows))`` form chunk k."""

    num_rows: int
    chunk_size: int

    @property
    def num_chunks(self) -> int:
        return -(-self.num_rows // self.chunk_size)

    def rows(self, index: int) -> slice:
        start = index * self.chunk_size
        return slice(start, min(start + self.chunk_size, self.num_rows))


@dataclass(frozen=True)
class ChunkSeeds:
    """Seeds of the three global generators for one chunk."""

    torch: int
    numpy: np.ndarray  # uint32 words for ``np.random.seed``
    python: int


def chunk_seeds(seed: int, index: int) -> ChunkSeeds:
    """Seeds of chunk ``index`` of a run with ``seed``: ``SeedSequence(seed, spawn_key=(k,))``."""
    sequence = np.random.SeedSequence(seed, spawn_key=(index,))
    words = sequence.generate_state(6, np.uint32)
    torch_seed = int(words[0]) | (int(words[1]) << 32)
    python_seed = int(words[2]) | (int(words[3]) << 32)
    return ChunkSeeds(torch=torch_seed, numpy=words[4:], python=python_seed)


@contextlib.contextmanager
def seeded_generators(seeds: ChunkSeeds) -> Iterator[None]:
    """Seed torch's CPU, numpy's and Python's global generators; restore them on exit."""
    with _GENERATORS_LOCK, torch.random.fork_rng(devices=[]):
        numpy_state, python_state = np.random.get_state(), random.getstate()
        try:
            torch.manual_seed(seeds.torch)
            np.random.seed(seeds.numpy)
            random.seed(seeds.python)
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


@dataclass
class ChunkOutput:
    """What a chunk returns: x (n, d) and, with scores, t (n, p), as numpy arrays."""

    index: int
    x: np.ndarray
    score: np.ndarray | None


def _as_rows(values, name: str, num_rows: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] != num_rows:
        raise ValueError(
            f"The simulator returned {name} of shape {values.shape} for a chunk of {num_rows} "
            f"rows; expected ({num_rows}, dim)."
        )
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float32)
    return values


def run_chunk(simulator: Callable, theta: np.ndarray, seed: int, index: int,
              with_score: bool) -> ChunkOutput:
    """Simulate one chunk: ``simulator(θ_k)`` (or ``simulator.simulate_with_score(θ_k)``).

    The simulator receives a CPU torch tensor ``(n, p)`` of θ's dtype and returns x
    ``(n, d)`` (and the joint score ``(n, p)``) as tensors or arrays. This function runs on
    Dask workers: everything it needs comes in its arguments.
    """
    batch = torch.from_numpy(np.ascontiguousarray(theta))
    with seeded_generators(chunk_seeds(seed, index)):
        if with_score:
            x, score = simulator.simulate_with_score(batch)
        else:
            x, score = simulator(batch), None
    x = _as_rows(x, "x", len(theta))
    if score is not None:
        score = _as_rows(score, "score", len(theta))
        if score.shape[1] != theta.shape[1]:
            raise ValueError(f"The simulator returned a score with {score.shape[1]} columns; "
                             f"θ has {theta.shape[1]}.")
    return ChunkOutput(index=index, x=x, score=score)
