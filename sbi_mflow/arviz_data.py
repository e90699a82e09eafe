"""Build ArviZ ``InferenceData`` from constrained posterior draws and sampler statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from torch import Tensor

__all__ = ["default_param_names", "to_inference_data"]


def default_param_names(param_dim: int) -> list[str]:
    """``["theta_0", ..., "theta_{p-1}"]``."""
    return [f"theta_{i}" for i in range(param_dim)]


def to_inference_data(
    samples: Tensor | np.ndarray,
    sample_stats: Mapping[str, np.ndarray] | None = None,
    x_o: Tensor | np.ndarray | None = None,
    param_names: Sequence[str] | None = None,
    attrs: Mapping[str, object] | None = None,
):
    """``az.InferenceData`` with groups ``posterior``, ``sample_stats``, ``observed_data``.

    Args:
        samples: θ draws in the constrained space, (num_chains, num_draws, p); stored as the
            variable ``theta`` with dims ``(chain, draw, theta_dim)`` and ``theta_dim``
            labelled by ``param_names`` (default ``theta_0 …``).
        sample_stats: name → array (num_chains, num_draws) (see :mod:`sbi_mflow.nuts`).
        x_o: observations (num_trials, d), stored as ``x_o`` with dims ``(trial, x_dim)``.
        param_names: one label per θ component.
        attrs: extra attributes (plain numbers/strings) stored on the posterior group.
    """
    import arviz as az

    values = samples.detach().cpu().numpy() if isinstance(samples, Tensor) else samples
    values = np.asarray(values, dtype=float)
    if values.ndim != 3:
        raise ValueError(
            f"samples must have shape (num_chains, num_draws, p), got {values.shape}."
        )
    names = list(param_names) if param_names is not None else default_param_names(values.shape[-1])
    if len(names) != values.shape[-1] or len(set(names)) != len(names):
        raise ValueError(
            f"param_names must hold {values.shape[-1]} distinct names, got {names}."
        )
    coords: dict[str, list] = {"theta_dim": names}
    dims: dict[str, list[str]] = {"theta": ["theta_dim"]}
    observed = None
    if x_o is not None:
        obs = x_o.detach().cpu().numpy() if isinstance(x_o, Tensor) else np.asarray(x_o)
        observed = {"x_o": np.asarray(obs, dtype=float)}
        dims["x_o"] = ["trial", "x_dim"]
    stats = None
    if sample_stats:
        stats = {}
        for key, value in sample_stats.items():
            array = np.asarray(value)
            if array.shape != values.shape[:2]:
                raise ValueError(
                    f"sample_stats[{key!r}] has shape {array.shape}, expected {values.shape[:2]}."
                )
            stats[key] = array.astype(bool) if key == "diverging" else array.astype(float)
    idata = az.from_dict(
        posterior={"theta": values},
        sample_stats=stats,
        observed_data=observed,
        coords=coords,
        dims=dims,
    )
    idata.posterior.attrs.update(dict(attrs or {}))
    return idata
