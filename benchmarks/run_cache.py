"""Unfinished benchmark runs kept on disk: the trained model, the results so far and the
progress inside the current trial count, so that a stopped run resumes where it stopped.

The cache is one cloudpickle file per run, replaced atomically; it carries a key of the
code that made it (sbi-mflow's version and a digest of ``benchmarks/methods.py``, whose
samplers are pickled by value), and a file of other code is ignored, so its model is
trained anew. A method that does not use sbi-mflow (sbi's own estimators) resumes across
sbi-mflow versions: only ``methods.py`` must be the same.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cloudpickle

import sbi_mflow
from benchmarks.methods import Fitted

__all__ = ["cache_path", "code_key", "load_unfinished", "save_unfinished", "write_atomically"]


def cache_path(cache: Path, task: str, method: str, budget: int, seed: int) -> Path:
    return cache / task / f"{method}-n{budget}-seed{seed}.pkl"


def code_key() -> str:
    """sbi-mflow's version and a digest of ``benchmarks/methods.py``: a cached model carries
    its samplers' code (closures are pickled by value), so a change to either retrains."""
    source = (Path(__file__).parent / "methods.py").read_bytes()
    return f"{sbi_mflow.__version__}+{hashlib.sha256(source).hexdigest()[:12]}"


def _same_code(saved: str, current: str, uses_sbi_mflow: bool) -> bool:
    """Whether a model saved under the key ``saved`` may serve code of key ``current``: the
    same ``methods.py``, and the same sbi-mflow version if the method uses sbi-mflow."""
    saved_version, _, saved_methods = saved.rpartition("+")
    version, _, methods = current.rpartition("+")
    return saved_methods == methods and (saved_version == version or not uses_sbi_mflow)


def load_unfinished(path: Path | None, uses_sbi_mflow: bool = True) -> dict | None:
    """What an interrupted run of the same code left at ``path``: its ``fitted`` model, its
    ``result`` so far and, when it stopped inside a T, that T's ``progress``. A method that
    does not use sbi-mflow (``uses_sbi_mflow=False``) may have been saved by another
    version of it."""
    if path is None or not path.exists():
        return None
    with path.open("rb") as file:
        saved = cloudpickle.load(file)
    if not _same_code(saved.get("code", ""), code_key(), uses_sbi_mflow):
        return None  # other code's model: train anew
    return saved


def save_unfinished(path: Path | None, fitted: Fitted, result: dict,
                    progress: dict | None = None) -> None:
    """Keep the trained model, the trials done so far and the progress inside the current T
    (one pickle, so that the result's ``info`` stays the object the model's sampler writes
    to)."""
    if path is None:
        return
    write_atomically(path, cloudpickle.dumps({"code": code_key(), "fitted": fitted,
                                              "result": result, "progress": progress}))


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` through a ``.tmp`` file beside it: a stop mid-write
    leaves the previous file, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_bytes(data)
    partial.replace(path)
