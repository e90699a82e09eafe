"""The Zarr group that holds a simulation run, written chunk by chunk.

Layout (one group, chunks of the arrays aligned with the run's chunks)::

    theta   (N, p)  written when the store is created
    x       (N, d)  fill value NaN, created when the first chunk arrives
    score   (N, p)  with ``with_score`` only, fill value NaN
    status  (N,)    int8 per row: 0 pending, 1 done, 2 invalid output (NaN/inf), 3 failed

Attributes: ``sbi_mflow_simulation`` (what identifies the run: a SHA-256 of θ, the seed,
the chunk size, ``with_score``), ``metadata`` (the user's, e.g. the simulator's name) and
``chunk_errors`` (the last exception of each chunk that failed).

Consistency: a chunk's x and score are written before its status, and every Zarr chunk file
is written atomically, so a status of "done" always has its data on disk, whenever the
writer is interrupted; readers read the status first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from sbi_mflow.simulation.chunks import ChunkOutput, ChunkPlan
from sbi_mflow.simulation.result import SimulationResult

__all__ = ["PENDING", "DONE", "INVALID", "FAILED", "RunIdentity", "SimulationStore"]

PENDING, DONE, INVALID, FAILED = 0, 1, 2, 3
_RUN_KEY = "sbi_mflow_simulation"
_FORMAT = 1

StoreLike = str | os.PathLike | zarr.abc.store.Store


@dataclass(frozen=True)
class RunIdentity:
    """What a store's rows are a function of; a rerun must match it exactly."""

    theta_sha256: str
    num_rows: int
    theta_dim: int
    theta_dtype: str
    seed: int
    chunk_size: int
    with_score: bool

    @classmethod
    def of(cls, theta: np.ndarray, seed: int, chunk_size: int, with_score: bool) -> RunIdentity:
        digest = hashlib.sha256()
        digest.update(f"{theta.dtype.str}{theta.shape}".encode())
        digest.update(np.ascontiguousarray(theta).tobytes())
        return cls(digest.hexdigest(), theta.shape[0], theta.shape[1], theta.dtype.str,
                   int(seed), int(chunk_size), bool(with_score))

    def differences(self, other: RunIdentity) -> list[str]:
        """Human-readable list of what differs between the store's run and this one."""
        found = []
        if (self.theta_sha256, self.num_rows, self.theta_dim) != (
                other.theta_sha256, other.num_rows, other.theta_dim):
            found.append(f"theta (store: {other.num_rows}×{other.theta_dim}, sha256 "
                         f"{other.theta_sha256[:12]}…; given: {self.num_rows}×{self.theta_dim}, "
                         f"sha256 {self.theta_sha256[:12]}…)")
        for name in ("seed", "chunk_size", "with_score"):
            stored, given = getattr(other, name), getattr(self, name)
            if stored != given:
                found.append(f"{name} (store: {stored}, given: {given})")
        return found


def _open_group(store: StoreLike, mode: str) -> zarr.Group:
    if isinstance(store, zarr.abc.store.Store):
        return zarr.open_group(store=store, mode=mode)
    path = Path(store)
    if mode == "r" and not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"No simulation store at {path} (no Zarr group there).")
    if path.exists() and not path.is_dir():
        raise ValueError(f"The store path {path} exists and is not a folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").is_file():
        raise ValueError(f"{path} is a non-empty folder but not a Zarr group: refusing to "
                         "write a simulation store into it.")
    return zarr.open_group(store=str(path), mode=mode)


class SimulationStore:
    """A run's Zarr group: create or reopen it, write chunks, read rows back."""

    def __init__(self, group: zarr.Group, identity: RunIdentity) -> None:
        self.group = group
        self.identity = identity
        self.plan = ChunkPlan(identity.num_rows, identity.chunk_size)
        self._arrays: dict[str, Any] = {}  # opened arrays (opening reads their metadata)

    # -------------------------------------------------------------------- opening
    @classmethod
    def create_or_resume(cls, store: StoreLike, theta: np.ndarray, identity: RunIdentity,
                         metadata: Mapping[str, Any] | None = None) -> SimulationStore:
        """Open ``store`` for this run: a new store, or one written for the same run.

        Raises ``ValueError`` naming every difference if the store holds another run.
        """
        group = _open_group(store, mode="a")
        stored = group.attrs.get(_RUN_KEY)
        if stored is None:
            # Only θ and status can exist without the attributes (a creation interrupted
            # before its last step); anything else belongs to someone else.
            if set(group.keys()) - {"theta", "status"} or group.attrs.asdict():
                raise ValueError(f"{store} is a Zarr group that is not an sbi-mflow "
                                 "simulation store: refusing to write into it.")
            chunks = (identity.chunk_size, identity.theta_dim)
            group.create_array("theta", shape=theta.shape, chunks=chunks, dtype=theta.dtype,
                               overwrite=True)
            group["theta"][...] = theta
            group.create_array("status", shape=(identity.num_rows,), overwrite=True,
                               chunks=(identity.chunk_size,), dtype="int8", fill_value=PENDING)
            group.attrs.update({_RUN_KEY: {"format": _FORMAT, **asdict(identity)},
                                "metadata": dict(metadata or {}), "chunk_errors": {}})
        else:
            differences = identity.differences(cls._identity(group, store))
            if differences:
                raise ValueError(
                    f"The store {store} was written for another simulation run; it differs "
                    f"in {'; '.join(differences)}. Use a new store path (or the run's θ, "
                    "seed, chunk_size and with_score to resume it).")
            if metadata:
                group.attrs["metadata"] = {**group.attrs.get("metadata", {}), **metadata}
        return cls(group, identity)

    @classmethod
    def open_existing(cls, store: StoreLike) -> SimulationStore:
        """Open a store read-only (it may be in the middle of being written)."""
        group = _open_group(store, mode="r")
        return cls(group, cls._identity(group, store))

    @staticmethod
    def _identity(group: zarr.Group, store: StoreLike) -> RunIdentity:
        stored = dict(group.attrs.get(_RUN_KEY) or {})
        if stored.pop("format", None) != _FORMAT:
            raise ValueError(f"{store} is not an sbi-mflow simulation store (format {_FORMAT}).")
        return RunIdentity(**stored)

    # -------------------------------------------------------------------- writing
    def _array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def chunks_to_run(self) -> list[int]:
        """Chunks with rows that are pending or failed (done and invalid rows are kept)."""
        status = self.status()
        redo = (status == PENDING) | (status == FAILED)
        return [k for k in range(self.plan.num_chunks) if redo[self.plan.rows(k)].any()]

    def _output_array(self, name: str, values: np.ndarray):
        if name not in self._arrays and name not in self.group:
            self._arrays[name] = self.group.create_array(
                name, shape=(self.identity.num_rows, values.shape[1]), dtype=values.dtype,
                chunks=(self.identity.chunk_size, values.shape[1]), fill_value=np.nan)
        array = self._array(name)
        if array.shape[1] != values.shape[1]:
            raise ValueError(f"The simulator returned {name} with {values.shape[1]} columns "
                             f"but the store holds {array.shape[1]}.")
        return array

    def write_chunk(self, output: ChunkOutput) -> int:
        """Store a finished chunk; returns its number of invalid (non-finite) rows."""
        rows = self.plan.rows(output.index)
        self._output_array("x", output.x)[rows] = output.x
        valid = np.isfinite(output.x).all(axis=1)
        if output.score is not None:
            self._output_array("score", output.score)[rows] = output.score
            valid &= np.isfinite(output.score).all(axis=1)
        self._array("status")[rows] = np.where(valid, DONE, INVALID).astype(np.int8)
        errors = self.group.attrs.get("chunk_errors", {})
        if str(output.index) in errors:
            self.group.attrs["chunk_errors"] = {k: v for k, v in errors.items()
                                                if k != str(output.index)}
        return int((~valid).sum())

    def mark_failed(self, index: int, error: BaseException) -> None:
        """Rows of a chunk that raised (after its retries): status failed, x stays NaN."""
        self._array("status")[self.plan.rows(index)] = FAILED
        errors = dict(self.group.attrs.get("chunk_errors", {}))
        errors[str(index)] = f"{type(error).__name__}: {error}"
        self.group.attrs["chunk_errors"] = errors

    # -------------------------------------------------------------------- reading
    def status(self) -> np.ndarray:
        return self._array("status")[...]

    def read(self) -> SimulationResult:
        """The rows of the store; status is read first, so every row marked done has its data."""
        status = self.status()
        theta = self.group["theta"][...]
        num_rows = self.identity.num_rows
        if "x" in self.group:
            x = self.group["x"][...]
        else:  # no chunk has finished yet
            x = np.full((num_rows, 0), np.nan, dtype=theta.dtype)
        score = None
        if self.identity.with_score:
            score = (self.group["score"][...] if "score" in self.group
                     else np.full_like(theta, np.nan))
        return SimulationResult(
            theta=torch.from_numpy(theta), x=torch.from_numpy(x),
            score=None if score is None else torch.from_numpy(score),
            failed=torch.from_numpy(status != DONE),
            metadata=dict(self.group.attrs.get("metadata", {})),
            chunk_errors=dict(self.group.attrs.get("chunk_errors", {})))
