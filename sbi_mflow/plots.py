"""Figures a person would rather look at than read: manifold, posterior, traces, training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_manifold", "plot_posterior", "plot_trace", "plot_training"]


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_manifold(data: np.ndarray, model_samples: np.ndarray, path: str | Path,
                  dims: Sequence[int] = (0, 1, 2), max_points: int = 3000) -> Path:
    """3-D scatter of data against samples from the learned manifold (first 3 coordinates)."""
    figure = plt.figure(figsize=(11, 5))
    reference = np.asarray(data)[:, list(dims)]
    low, high = np.quantile(reference, 0.005, axis=0), np.quantile(reference, 0.995, axis=0)
    for index, (values, title, colour) in enumerate(
        ((data, "simulated data", "tab:blue"), (model_samples, "M-flow samples", "tab:orange"))
    ):
        axis = figure.add_subplot(1, 2, index + 1, projection="3d")
        points = np.asarray(values)[:max_points]
        axis.scatter(*(points[:, d] for d in dims), s=2, alpha=0.4, color=colour)
        axis.set_title(title)
        axis.set_xlabel(f"x{dims[0]}")
        axis.set_ylabel(f"x{dims[1]}")
        axis.set_zlabel(f"x{dims[2]}")
        axis.set_xlim(low[0], high[0])
        axis.set_ylim(low[1], high[1])
        axis.set_zlim(low[2], high[2])
    return _save(figure, path)


def plot_posterior(samples: np.ndarray, path: str | Path, reference: np.ndarray | None = None,
                   true_theta: np.ndarray | None = None,
                   names: Sequence[str] | None = None) -> Path:
    """Marginal histograms of posterior samples, the reference posterior and the true θ."""
    samples = np.asarray(samples).reshape(len(samples), -1)
    dim = samples.shape[1]
    names = list(names) if names is not None else [f"theta_{i}" for i in range(dim)]
    figure, axes = plt.subplots(1, dim, figsize=(4.5 * dim, 3.5), squeeze=False)
    for i, axis in enumerate(axes[0]):
        axis.hist(samples[:, i], bins=50, density=True, alpha=0.6, label="M-flow posterior")
        if reference is not None:
            axis.hist(np.asarray(reference).reshape(len(reference), -1)[:, i], bins=50,
                      density=True, histtype="step", color="black", label="reference")
        if true_theta is not None:
            axis.axvline(np.ravel(true_theta)[i], color="tab:red", label="true θ")
        axis.set_xlabel(names[i])
    axes[0][0].legend()
    return _save(figure, path)


def plot_trace(inference_data, path: str | Path, bins: int = 40) -> Path:
    """Trace plot of ``posterior["theta"]``: per component, each chain's marginal histogram
    (left) and its draws in order (right). Works with arviz 0.2x ``InferenceData`` and 1.x
    ``DataTree`` (whose plots moved to the separate arviz-plots package)."""
    theta = inference_data.posterior["theta"]
    values = np.asarray(theta.values)  # (chain, draw, p)
    names = [str(v) for v in theta["theta_dim"].values] if "theta_dim" in theta.coords else [
        f"theta_{i}" for i in range(values.shape[-1])]
    figure, axes = plt.subplots(values.shape[-1], 2, figsize=(10, 2.2 * values.shape[-1]),
                                squeeze=False)
    for i, name in enumerate(names):
        for chain in values[..., i]:
            axes[i][0].hist(chain, bins=bins, histtype="step", density=True, lw=0.8)
            axes[i][1].plot(chain, lw=0.5, alpha=0.8)
        axes[i][0].set_ylabel(name)
        axes[i][1].set_xlabel("draw")
    axes[0][0].set_title(f"{values.shape[0]} chains")
    axes[0][1].set_title("trace")
    figure.tight_layout()
    return _save(figure, path)


def plot_training(phases: Sequence[dict], path: str | Path) -> Path:
    """Training and validation loss terms per epoch, one panel per phase.

    Candidate initialisations of the manifold phase (entries with a ``candidate`` index)
    are drawn as thin grey validation curves behind the chosen one.
    """
    names = list(dict.fromkeys(entry["phase"] for entry in phases))
    figure, axes = plt.subplots(1, max(len(names), 1), figsize=(5 * max(len(names), 1), 3.5),
                                squeeze=False)
    for axis, name in zip(axes[0], names, strict=False):
        entries = [e for e in phases if e["phase"] == name]
        candidates = list(dict.fromkeys(e.get("candidate") for e in entries))
        chosen = max(candidates, key=lambda c: sum(e.get("candidate") == c for e in entries))
        for candidate in candidates:
            if candidate == chosen:
                continue
            probe = [e for e in entries if e.get("candidate") == candidate]
            axis.plot([e["epoch"] for e in probe], [e["validation_total"] for e in probe],
                      color="0.7", lw=0.8)
        entries = [e for e in entries if e.get("candidate") == chosen]
        keys = sorted({k for e in entries for k in e
                       if k.startswith(("train_", "validation_")) and k[-5:] != "total"})
        for key in keys:
            values = [e.get(key, np.nan) for e in entries]
            style = "-" if key.startswith("train_") else "--"
            axis.plot([e["epoch"] for e in entries], values, style, label=key)
        axis.set_title(f"{name} phase" + (f" ({len(candidates)} candidates, grey)"
                                          if len(candidates) > 1 else ""))
        axis.set_xlabel("epoch")
        if name in ("manifold", "simultaneous"):
            axis.set_yscale("log")
        axis.legend(fontsize=7)
    return _save(figure, path)
