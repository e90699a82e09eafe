"""ArviZ data from posterior draws and sampler statistics, for arviz 0.2x and arviz ≥ 1.

arviz 0.2x returns ``InferenceData``; arviz 1.x returns an ``xarray.DataTree``. Both give
``data.posterior["theta"]``, ``data.sample_stats["diverging"]``, ``az.rhat``, ``az.ess``,
``az.summary`` and ``to_netcdf``; the few differences (building, listing groups, reading
netCDF back) go through :func:`to_inference_data`, :func:`group_names` and
:func:`load_netcdf`.

This module needs numpy and arviz only (no torch): tensors are accepted through their
``detach().cpu().numpy()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "arviz_major_version",
    "default_param_names",
    "group_names",
    "load_netcdf",
    "to_inference_data",
]


def arviz_major_version() -> int:
    import arviz as az

    return int(az.__version__.split(".")[0])


def default_param_names(param_dim: int) -> list[str]:
    """``["theta_0", ..., "theta_{p-1}"]``."""
    return [f"theta_{i}" for i in range(param_dim)]


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def to_inference_data(
    samples: Any,
    sample_stats: Mapping[str, Any] | None = None,
    x_o: Any | None = None,
    param_names: Sequence[str] | None = None,
    attrs: Mapping[str, object] | None = None,
):
    """ArviZ data with groups ``posterior``, ``sample_stats``, ``observed_data``.

    Args:
        samples: θ draws in the constrained space, (num_chains, num_draws, p); stored as the
            variable ``theta`` with dims ``(chain, draw, theta_dim)`` and ``theta_dim``
            labelled by ``param_names`` (default ``theta_0 …``).
        sample_stats: name → array (num_chains, num_draws) (see
            :mod:`sbi_mflow.sampling.record`); ``diverging`` is stored as bool.
        x_o: observations (num_trials, d), stored as ``x_o`` with dims ``(trial, x_dim)``.
        param_names: one label per θ component.
        attrs: extra attributes (plain numbers/strings) stored on the posterior group.

    Returns:
        ``az.InferenceData`` (arviz 0.2x) or ``xarray.DataTree`` (arviz ≥ 1).
    """
    import arviz as az

    values = np.asarray(_as_array(samples), dtype=float)
    if values.ndim != 3:
        raise ValueError(
            f"samples must have shape (num_chains, num_draws, p), got {values.shape}."
        )
    names = list(param_names) if param_names is not None else default_param_names(values.shape[-1])
    if len(names) != values.shape[-1] or len(set(names)) != len(names):
        raise ValueError(
            f"param_names must hold {values.shape[-1]} distinct names, got {names}."
        )
    groups: dict[str, dict[str, np.ndarray]] = {"posterior": {"theta": values}}
    coords: dict[str, list] = {"theta_dim": names}
    dims: dict[str, list[str]] = {"theta": ["theta_dim"]}
    if sample_stats:
        stats = {}
        for key, value in sample_stats.items():
            array = _as_array(value)
            if array.shape != values.shape[:2]:
                raise ValueError(
                    f"sample_stats[{key!r}] has shape {array.shape}, expected {values.shape[:2]}."
                )
            stats[key] = array.astype(bool) if key == "diverging" else array.astype(float)
        groups["sample_stats"] = stats
    if x_o is not None:
        groups["observed_data"] = {"x_o": np.asarray(_as_array(x_o), dtype=float)}
        dims["x_o"] = ["trial", "x_dim"]
    if arviz_major_version() >= 1:
        data = az.from_dict(groups, coords=coords, dims=dims)
    else:
        data = az.from_dict(**groups, coords=coords, dims=dims)
    data.posterior.attrs.update(dict(attrs or {}))
    return data


def group_names(data) -> set[str]:
    """Names of the groups (``{"posterior", "sample_stats", ...}``) of either kind of data."""
    groups = data.groups
    groups = groups() if callable(groups) else groups  # InferenceData: method; DataTree: paths
    return {name.strip("/") for name in groups if name.strip("/")}


def load_netcdf(path: str):
    """Read what ``data.to_netcdf(path)`` wrote, with whichever arviz is installed."""
    import arviz as az

    return az.from_netcdf(path)
