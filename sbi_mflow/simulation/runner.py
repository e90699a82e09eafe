"""``simulate`` and ``load_simulations``: chunked, seeded, resumable simulation runs."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from sbi_mflow.simulation.chunks import ChunkPlan
from sbi_mflow.simulation.executors import ChunkFailure, ChunkJob, executor_for
from sbi_mflow.simulation.result import SimulationResult
from sbi_mflow.simulation.store import FAILED, INVALID, RunIdentity, SimulationStore, StoreLike

__all__ = ["SimulationWarning", "load_simulations", "simulate"]


class SimulationWarning(UserWarning):
    """Some simulations failed; they are marked in ``SimulationResult.failed``."""


def _theta_array(theta: Any) -> np.ndarray:
    if isinstance(theta, torch.Tensor):
        theta = theta.detach().cpu().numpy()
    theta = np.asarray(theta)
    if theta.ndim != 2 or theta.shape[0] == 0 or theta.shape[1] == 0:
        raise ValueError(f"theta must be a 2-D (num_simulations, p) tensor with at least one "
                         f"row and column, got shape {theta.shape}.")
    if not np.issubdtype(theta.dtype, np.floating):
        theta = theta.astype(np.float32)
    if not np.isfinite(theta).all():
        bad = int((~np.isfinite(theta)).any(axis=1).sum())
        raise ValueError(f"theta has NaN or inf in {bad} row(s).")
    return np.ascontiguousarray(theta)


def _check_options(simulator: Callable, chunk_size: int, seed: int, retries: int,
                   with_score: bool) -> None:
    if with_score and not callable(getattr(simulator, "simulate_with_score", None)):
        raise ValueError(f"with_score=True needs a simulator with a simulate_with_score method;"
                         f" {type(simulator).__name__} has none.")
    if not with_score and not callable(simulator):
        raise ValueError(f"simulator must be callable θ (N, p) -> x (N, d); got "
                         f"{type(simulator).__name__}.")
    for name, value, low in (("chunk_size", chunk_size, 1), ("seed", seed, 0),
                             ("retries", retries, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def simulate(
    simulator: Callable,
    theta: Any,
    *,
    store: StoreLike | None = None,
    client: Any = None,
    chunk_size: int = 1000,
    seed: int = 0,
    with_score: bool = False,
    retries: int = 2,
    progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> SimulationResult:
    """Simulate x (and the joint score) for every row of θ, chunk by chunk.

    Args:
        simulator: a callable θ (n, p) → x (n, d) (torch tensor in, tensor or array out) or,
            with ``with_score``, an object whose ``simulate_with_score(θ)`` returns (x, t).
            On a cluster it is pickled to the workers, so it must be importable there.
        theta: (N, p) tensor or array; cut into chunks of ``chunk_size`` rows.
        store: a path (or a Zarr store) for the results; each chunk is written as it
            finishes. Calling again with the same store, θ, seed, chunk size and
            ``with_score`` runs only the chunks that are missing or failed; a store of
            another run is refused with a ``ValueError``. None: an in-memory store.
        client: None runs in this process; a ``dask.distributed.Client`` or a scheduler
            address runs one task per chunk on that cluster.
        seed: chunk k runs with torch's, numpy's and Python's global generators seeded from
            ``SeedSequence(seed, spawn_key=(k,))``: the result does not depend on the
            number of workers, the order of completion or retries. The caller's generator
            states are left as they were.
        retries: re-submissions of a chunk that raised or whose worker died.
        metadata: plain JSON values to keep in the store (e.g. the simulator's name).

    Returns:
        A :class:`SimulationResult`. Rows of chunks that failed after their retries
        (x = NaN) and rows with NaN/inf output are marked in ``failed``, with one
        :class:`SimulationWarning` giving the counts and the first exception.

    ``KeyboardInterrupt`` cancels what has not run; the finished chunks stay in the store.
    """
    theta_values = _theta_array(theta)
    _check_options(simulator, chunk_size, seed, retries, with_score)
    identity = RunIdentity.of(theta_values, seed, chunk_size, with_score)
    sim_store = SimulationStore.create_or_resume(
        zarr.storage.MemoryStore() if store is None else store, theta_values, identity,
        metadata)
    plan = ChunkPlan(len(theta_values), chunk_size)
    todo = sim_store.chunks_to_run()
    job = ChunkJob(simulator, theta_values, int(seed), with_score, plan)
    first_error: BaseException | None = None
    with executor_for(client, retries) as executor, tqdm(
            total=plan.num_chunks, initial=plan.num_chunks - len(todo), desc="simulating",
            unit="chunk", disable=not progress) as bar:
        outcomes = executor.run(job, todo)
        try:
            for outcome in outcomes:
                if isinstance(outcome, ChunkFailure):
                    sim_store.mark_failed(outcome.index, outcome.error)
                    first_error = first_error or outcome.error
                else:
                    sim_store.write_chunk(outcome)
                bar.update()
        finally:
            outcomes.close()
    _warn_about_failures(sim_store.status(), first_error, retries)
    return sim_store.read()


def _warn_about_failures(status: np.ndarray, first_error: BaseException | None,
                         retries: int) -> None:
    raised, invalid = int((status == FAILED).sum()), int((status == INVALID).sum())
    if not raised and not invalid:
        return
    parts = []
    if raised:
        first = f"; first: {type(first_error).__name__}: {first_error}" if first_error else ""
        parts.append(f"{raised} in chunks that raised after {retries} retries (x = NaN; a "
                     f"rerun with the same store recomputes them{first})")
    if invalid:
        parts.append(f"{invalid} with NaN/inf in the simulator's output")
    warnings.warn(f"{raised + invalid} of {len(status)} simulations failed: "
                  f"{'; '.join(parts)}. They are marked in result.failed and left out by "
                  "result.append_to(...).", SimulationWarning, stacklevel=3)


def load_simulations(store: StoreLike) -> SimulationResult:
    """Read a store written by :func:`simulate`, also while it is being written.

    Rows of chunks that have not finished (or failed) are marked in ``failed``.
    """
    return SimulationStore.open_existing(store).read()
