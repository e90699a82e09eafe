"""Saving and loading estimators as a state dict plus a plain description.

The file holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``: no pickled code objects. It stores the configuration
with what the estimator is made of (:class:`~sbi_mflow.models.ModelSpec`), so an estimator
composed by hand loads like a preset. A prescribed chart (the "fom" model) is user code:
the file stores its identity when its class is registered
(:func:`sbi_mflow.flows.prescribed.register_chart`), else it must be passed to
:func:`load` (``chart=``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sbi_mflow.builders import build_estimator
from sbi_mflow.config import ManifoldFlowConfig
from sbi_mflow.estimator import ManifoldFlowEstimator
from sbi_mflow.flows.prescribed import ExactChart, chart_identity, registered_chart
from sbi_mflow.models import model_spec

__all__ = ["FORMAT", "load", "save"]

#: Identifier written into every saved file.
FORMAT = "sbi-mflow/estimator"
#: 1: sbi-mflow 0.1 (flat ``net.standardize``/``net.outer``/``net.encoder``);
#: 2: the estimator composed of parts (``net.chart``, ``net.encoder.network``), the model
#:    named by ``config["model"]``;
#: 3: ``config["spec"]`` describes the parts (any composition, presets included) and
#:    ``"chart"`` identifies a registered prescribed chart (or is None).
_VERSION = 3


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


def _config_values(payload: dict[str, Any]) -> dict[str, Any]:
    """The configuration of a file of any version, in the current layout."""
    values = dict(payload["config"])
    version = payload["version"]
    if version <= 2:  # the model's name: the preset of that name
        values["spec"] = model_spec(values.pop("model")).to_dict()
    if version == 1:
        values["tangent_alignment"] = False  # introduced in version 2
    values.setdefault("graph_layer", False)  # files written before 0.2.0.dev2 have none
    values["spec"] = model_spec(values["spec"])
    return values


def save(estimator: ManifoldFlowEstimator, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``{"format", "version", "config", "chart", "state_dict",
    "reference_reconstruction_error"}`` to ``path``.

    ``"chart"`` is ``{"name", "options"}`` of a registered prescribed chart, else None. The
    file is written to a temporary name first and then moved into place, so an
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
    part = estimator.chart
    payload = {
        "format": FORMAT,
        "version": _VERSION,
        "config": estimator.config.to_dict(),
        "chart": chart_identity(part.prescribed) if isinstance(part, ExactChart) else None,
        "state_dict": {k: v.detach().cpu() for k, v in estimator.state_dict().items()},
        # the 99% quantile of held-out reconstruction errors, when a trainer measured it
        "reference_reconstruction_error": getattr(estimator, "reference_reconstruction_error",
                                                  None),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load(
    path: str | os.PathLike, map_location: str | torch.device = "cpu",
    chart: nn.Module | None = None,
) -> ManifoldFlowEstimator:
    """Rebuild an estimator saved by :func:`save` (in eval mode, on ``map_location``).

    Args:
        path: the file.
        map_location: device to load onto.
        chart: the prescribed chart of a "fom" estimator whose chart is not registered
            (user code); it must have the saved chart's buffers and parameters. Overrides a
            registered one.
    """
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
    config = ManifoldFlowConfig.from_dict(_config_values(payload))
    state = payload["state_dict"]
    if version == 1:
        state = _upgrade_v1(dict(state))
    if config.spec.needs_chart and chart is None:
        identity = payload.get("chart")
        if identity is None:
            raise ValueError(
                f"{path} holds a model on a prescribed chart that is not registered (user "
                "code, which a saved file does not contain): pass it, "
                "sbi_mflow.load(path, chart=my_chart)."
            )
        chart = registered_chart(identity["name"], identity["options"])
    estimator = build_estimator(config, chart=chart)
    estimator.load_state_dict(state)
    if payload.get("reference_reconstruction_error") is not None:
        estimator.reference_reconstruction_error = float(payload["reference_reconstruction_error"])
    return estimator.to(map_location).eval()
