"""Saving and loading estimators as a state dict plus a plain configuration.

The file holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``: no pickled code objects.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sbi_mflow.builders import build_estimator
from sbi_mflow.config import ManifoldFlowConfig
from sbi_mflow.estimator import ManifoldFlowEstimator

__all__ = ["FORMAT", "load", "save"]

#: Identifier written into every saved file.
FORMAT = "sbi-mflow/estimator"
#: 1: sbi-mflow 0.1 (flat ``net.standardize``/``net.outer``/``net.encoder``);
#: 2: the estimator composed of parts (``net.chart``, ``net.encoder.network``).
_VERSION = 2


def _upgrade_v1(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a version-1 state dict to the composed layout (same weights and maths)."""
    shift, scale = state.pop("net.standardize._shift"), state.pop("net.standardize._scale")
    upgraded = {"net.chart.standardize.mean": -shift / scale,
                "net.chart.standardize.std": 1.0 / scale}
    prefixes = {"net.outer.": "net.chart.body.", "net.encoder.": "net.encoder.network."}
    for key, value in state.items():
        for old, new in prefixes.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        upgraded[key] = value
    return upgraded


def save(estimator: ManifoldFlowEstimator, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``{"format", "version", "config", "state_dict"}`` to ``path``.

    The file is written to a temporary name first and then moved into place, so an
    interrupted save never destroys an existing file. With ``overwrite=False`` an existing
    file raises ``FileExistsError``.
    """
    if not isinstance(estimator, ManifoldFlowEstimator):
        raise TypeError(
            f"save expects a ManifoldFlowEstimator, got {type(estimator).__name__}."
        )
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    payload = {
        "format": FORMAT,
        "version": _VERSION,
        "config": estimator.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in estimator.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> ManifoldFlowEstimator:
    """Rebuild an estimator saved by :func:`save` (in eval mode, on ``map_location``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No saved estimator at {path}.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for foreign files
        raise ValueError(f"{path} is not a file written by sbi_mflow.save: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a file written by sbi_mflow.save.")
    version = payload.get("version", 0)
    if version > _VERSION or version < 1:
        raise ValueError(
            f"{path} has format version {version}; this sbi-mflow reads versions 1 to "
            f"{_VERSION} (a newer file needs a newer sbi-mflow)."
        )
    values = dict(payload["config"])
    state = payload["state_dict"]
    if version == 1:
        state = _upgrade_v1(dict(state))
        values["tangent_alignment"] = False  # introduced in version 2
    values.setdefault("graph_layer", False)  # files written before 0.2.0.dev2 have none
    config = ManifoldFlowConfig.from_dict(values)
    estimator = build_estimator(config)
    estimator.load_state_dict(state)
    return estimator.to(map_location).eval()
