"""Where chunks run: in this process, or as tasks on a Dask distributed cluster.

Both executors take the chunk indices to run and yield, in order of completion, a
:class:`~sbi_mflow.simulation.chunks.ChunkOutput` per finished chunk or a
:class:`ChunkFailure` once a chunk has failed ``1 + retries`` times. Closing the iterator
(or an exception such as ``KeyboardInterrupt``) cancels what has not run yet.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbi_mflow.simulation.chunks import ChunkOutput, ChunkPlan, run_chunk

__all__ = ["ChunkFailure", "ChunkJob", "DaskExecutor", "InProcessExecutor", "executor_for"]


@dataclass(frozen=True)
class ChunkJob:
    """Everything a chunk needs: the simulator, all of θ, the seed and the chunk plan."""

    simulator: Callable
    theta: np.ndarray
    seed: int
    with_score: bool
    plan: ChunkPlan

    def arguments(self, index: int) -> tuple:
        rows = self.plan.rows(index)
        return (self.simulator, self.theta[rows], self.seed, index, self.with_score)


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk that raised (or lost its worker) on every one of its attempts."""

    index: int
    error: BaseException


Outcome = ChunkOutput | ChunkFailure


class InProcessExecutor:
    """Runs chunks one after another in this process (no Dask needed)."""

    def __init__(self, retries: int) -> None:
        self.retries = retries

    def run(self, job: ChunkJob, indices: Sequence[int]) -> Iterator[Outcome]:
        for index in indices:
            error: BaseException | None = None
            for _ in range(1 + self.retries):
                try:
                    output = run_chunk(*job.arguments(index))
                except Exception as caught:  # KeyboardInterrupt and the like propagate
                    error = caught
                else:
                    error = None
                    break
            yield output if error is None else ChunkFailure(index, error)


class DaskExecutor:
    """Runs each chunk as a task on a Dask cluster, collected with ``as_completed``.

    A task whose worker dies is rescheduled by Dask itself (``distributed.scheduler.
    allowed-failures``); a task that ends in error (the simulator raised, or the task
    killed too many workers) is submitted again, up to ``retries`` times.
    """

    def __init__(self, client: Any, retries: int) -> None:
        self.client = client
        self.retries = retries

    def run(self, job: ChunkJob, indices: Sequence[int]) -> Iterator[Outcome]:
        from distributed import as_completed

        run_id = uuid.uuid4().hex[:12]
        attempts: dict[Any, tuple[int, int]] = {}

        def submit(index: int, attempt: int):
            future = self.client.submit(run_chunk, *job.arguments(index), pure=False,
                                        key=f"sbi-mflow-chunk-{index}-{attempt}-{run_id}")
            attempts[future] = (index, attempt)
            return future

        completed = as_completed([submit(index, 0) for index in indices])
        try:
            for future in completed:
                index, attempt = attempts.pop(future)
                if future.status == "finished":
                    output = future.result()
                    future.release()
                    yield output
                    continue
                error = _future_error(future)
                future.release()
                if attempt < self.retries:
                    completed.add(submit(index, attempt + 1))
                else:
                    yield ChunkFailure(index, error)
        finally:
            if attempts:
                self.client.cancel(list(attempts))


def _future_error(future) -> BaseException:
    try:
        error = future.exception()
    except BaseException as cancelled:  # a cancelled future raises instead of returning
        if isinstance(cancelled, KeyboardInterrupt):
            raise
        error = cancelled
    return error if error is not None else RuntimeError(f"task ended as {future.status!r}")


@contextlib.contextmanager
def executor_for(client: Any, retries: int) -> Iterator[InProcessExecutor | DaskExecutor]:
    """The executor for ``client``: None, a ``distributed.Client`` or a scheduler address."""
    if client is None:
        yield InProcessExecutor(retries)
        return
    try:
        from distributed import Client
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise ImportError("client= needs Dask distributed: pip install 'dask[distributed]'."
                          ) from error
    if isinstance(client, str):
        with Client(client, set_as_default=False) as own_client:
            yield DaskExecutor(own_client, retries)
    elif isinstance(client, Client):
        yield DaskExecutor(client, retries)
    else:
        raise TypeError("client must be None (this process), a dask.distributed.Client or a "
                        "scheduler address such as 'tcp://host:8786'; got "
                        f"{type(client).__name__}.")
