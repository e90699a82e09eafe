"""Unfinished benchmark runs as small JSON files that can be committed, so that a run longer
than one machine's lifetime goes on in another session.

The pickled cache (:mod:`benchmarks.run_cache`) keeps the trained model and lives on one
machine. The ledger keeps what a session cannot make again cheaply, the draws, and none of
the model: the trial counts T already scored, the draws of each observation of the T in
progress (float32, base64) and the generators' states, beside a digest of the trained
network's parameters. A later session trains the model anew with the same seed and goes on
from the ledger only if the digest is the same, so that every draw of a result comes from
one model; otherwise it starts over.

Only a method whose :class:`~benchmarks.methods.Fitted` names its ``network`` gets a ledger
(sbi's estimators, which sample one observation at a time for T > 1 and take hours there).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy
import torch

from benchmarks.methods import Fitted
from benchmarks.run_cache import write_atomically

__all__ = ["ledger_path", "load_ledger", "parameter_digest", "save_ledger"]


def ledger_path(folder: Path, task: str, method: str, budget: int, seed: int) -> Path:
    return folder / task / f"{method}-n{budget}-seed{seed}.json"


def parameter_digest(network: torch.nn.Module) -> str:
    """SHA-256 of a network's parameters and buffers, in ``state_dict`` order (bit-exact:
    two trainings agree only if every float does)."""
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _encode_tensor(tensor: torch.Tensor) -> dict:
    array = tensor.detach().cpu().numpy()
    return {"dtype": str(array.dtype), "shape": list(array.shape),
            "base64": base64.b64encode(array.tobytes()).decode()}


def _decode_tensor(record: dict) -> torch.Tensor:
    array = numpy.frombuffer(base64.b64decode(record["base64"]), dtype=record["dtype"])
    return torch.from_numpy(array.reshape(record["shape"]).copy())


def _encode_progress(progress: dict) -> dict:
    kind, keys, position, has_gauss, cached = progress["numpy_rng"]
    return {"trials": progress["trials"], "seconds": progress["seconds"],
            "draws": [_encode_tensor(draws) for draws in progress["draws"]],
            "torch_rng": _encode_tensor(progress["torch_rng"]),
            "numpy_rng": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)]}


def _decode_progress(record: dict) -> dict:
    kind, keys, position, has_gauss, cached = record["numpy_rng"]
    return {"trials": record["trials"], "seconds": record["seconds"],
            "draws": [_decode_tensor(draws) for draws in record["draws"]],
            "torch_rng": _decode_tensor(record["torch_rng"]),
            "numpy_rng": (kind, numpy.asarray(keys, dtype=numpy.uint32), position, has_gauss,
                          cached)}


def save_ledger(path: Path | None, fitted: Fitted, result: dict,
                progress: dict | None = None) -> None:
    """Write the run's ledger (replaced atomically); nothing for a method without a
    ``network``."""
    if path is None or fitted.network is None:
        return
    record = {"digest": parameter_digest(fitted.network), "result": result,
              "progress": None if progress is None else _encode_progress(progress)}
    write_atomically(path, (json.dumps(record) + "\n").encode())


def load_ledger(path: Path | None, fitted: Fitted) -> tuple[dict, dict | None] | None:
    """The ``result`` so far and the ``progress`` inside the current T that the ledger at
    ``path`` holds for a model with ``fitted``'s parameters; ``None`` where there is no
    ledger or it was written by a model with other parameters."""
    if path is None or fitted.network is None or not path.exists():
        return None
    record = json.loads(path.read_text())
    if record["digest"] != parameter_digest(fitted.network):
        return None
    progress = record["progress"]
    return record["result"], None if progress is None else _decode_progress(progress)
