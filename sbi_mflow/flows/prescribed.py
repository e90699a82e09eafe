"""A prescribed chart: a flow on a manifold the user knows (FOM).

The user gives a chart g*: R^n → R^d and its inverse on the manifold as a torch module
satisfying :class:`PrescribedChart`. The estimator (the "fom" preset) is then the
n-dimensional conditional inner flow on u = g*⁻¹(x) with the exact volume term:

    log p(x | θ) = log p(u | θ) − ½ log det(J_{g*}ᵀ J_{g*})(u),  u = g*⁻¹(x),

the density of x with respect to the manifold's volume (Brehmer & Cranmer 2020, Table 1's
"FOM", a flow on the true manifold). Nothing of the chart is trained.

Saving: a chart is user code, so a saved file stores only its identity when its class is
registered (:func:`register_chart`; the simulators' charts are, by name), and
``sbi_mflow.load(path)`` rebuilds it as ``cls(**chart.options)``; otherwise
``sbi_mflow.load(path, chart=my_chart)`` takes it. Its buffers and parameters are in the
state dict either way.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from sbi_mflow.flows.chart import ChartPart, ChartPoint, Standardization

__all__ = [
    "ExactChart",
    "check_prescribed_chart",
    "PrescribedChart",
    "chart_identity",
    "register_chart",
    "registered_chart",
]


@runtime_checkable
class PrescribedChart(Protocol):
    """A chart g*: R^n → R^d of a known manifold and its inverse, as an ``nn.Module``.

    Any ``nn.Module`` with these members satisfies it (no need to subclass):

    * ``manifold_dim`` (n) and ``data_dim`` (d);
    * ``decode(u)``: g*(u), (B, n) -> (B, d), differentiable (autograd gives the Jacobian
      of the volume term; it must work in the dtype of ``u``);
    * ``encode(x)``: g*⁻¹, (B, d) -> (B, n), with ``encode(decode(u)) = u``; off the
      manifold any left inverse (e.g. a projection's coordinates) will do, since
      ``decode(encode(x))`` is then the estimator's projection of x.

    Optional: ``options``, a dict of plain values with which a registered chart class is
    rebuilt, ``cls(**chart.options)`` (see :func:`register_chart`).
    """

    manifold_dim: int
    data_dim: int

    def decode(self, u: Tensor) -> Tensor: ...

    def encode(self, x: Tensor) -> Tensor: ...


class ExactChart(ChartPart):
    """A :class:`PrescribedChart` as the estimator's chart part: g = g*, e = g*⁻¹.

    Nothing here is trained: the prescribed chart's own parameters, if any, are frozen
    (``requires_grad=False``); its buffers and parameters are in the state dict.

    Args:
        prescribed: the user's chart (an ``nn.Module`` satisfying :class:`PrescribedChart`).
        standardize: x-standardisation from the training data: the units of the
            reconstruction error and of the off-manifold check (not part of the density).
    """

    trainable = False

    def __init__(self, prescribed: nn.Module, standardize: Standardization) -> None:
        super().__init__()
        check_prescribed_chart(prescribed)
        self.prescribed = prescribed.requires_grad_(False)
        self.standardize = standardize
        self.manifold_dim = int(prescribed.manifold_dim)
        self.conditional = False

    def encode(self, x: Tensor, context: Tensor | None = None) -> ChartPoint:
        """u = g*⁻¹(x): (B, d) -> (B, n)."""
        return ChartPoint(self.prescribed.encode(x))

    def decode(self, u: Tensor, context: Tensor | None = None) -> Tensor:
        """g*(u): (B, n) -> (B, d)."""
        return self.prescribed.decode(u)

    def latent_standardization(self, x: Tensor | None) -> Standardization:
        """u = g*⁻¹(x) may have any scale: the inner flow standardises it (statistics of the
        encoded training data; the identity without data)."""
        u = None
        if x is not None:
            with torch.no_grad():
                u = self.encode(x).u
        return Standardization.from_data(u, self.manifold_dim)


def check_prescribed_chart(chart: Any, data_dim: int | None = None) -> None:
    """A clear error unless ``chart`` is an ``nn.Module`` satisfying :class:`PrescribedChart`
    (with ``data_dim`` = d when given)."""
    if not isinstance(chart, nn.Module) or not isinstance(chart, PrescribedChart):
        raise TypeError(
            "chart must be a torch.nn.Module with manifold_dim, data_dim, decode(u) and "
            f"encode(x) (sbi_mflow.PrescribedChart), got {type(chart).__name__}."
        )
    if not 1 <= chart.manifold_dim < chart.data_dim:
        raise ValueError(
            f"The chart's manifold_dim ({chart.manifold_dim}) must be >= 1 and smaller than "
            f"its data_dim ({chart.data_dim})."
        )
    if data_dim is not None and chart.data_dim != data_dim:
        raise ValueError(
            f"The chart maps to R^{chart.data_dim}, but x has {data_dim} dimensions."
        )


# ---------------------------------------------------------------------------- registry
#: The library's own charts, imported on first use: name -> (module, class name).
_BUILTIN = {
    "polynomial-surface": ("simulators.polynomial_surface", "PolynomialSurfaceChart"),
    "conditional-sphere": ("simulators.sphere", "StereographicSphereChart"),
}
_REGISTRY: dict[str, type[nn.Module]] = {}


def register_chart(name: str, cls: type[nn.Module] | None = None) -> Any:
    """Make charts of class ``cls`` rebuildable by name when a saved estimator is loaded.

    ``cls(**chart.options)`` must rebuild ``chart`` (``options``: plain values; a chart
    without ``options`` is rebuilt as ``cls()``). Returns ``cls``; without ``cls`` a class
    decorator: ``@register_chart("my-chart")``.
    """
    if cls is None:
        return lambda decorated: register_chart(name, decorated)
    known = _REGISTRY.get(name)
    same = known is not None and (known.__module__, known.__qualname__) == (
        cls.__module__, cls.__qualname__)  # the same class imported again
    if known is not None and not same:
        raise ValueError(f"A chart named {name!r} is already registered ({known.__name__}).")
    _REGISTRY[name] = cls
    return cls


def _load_builtins() -> None:
    for name, (module, attribute) in _BUILTIN.items():
        if name not in _REGISTRY:
            _REGISTRY[name] = getattr(importlib.import_module(module), attribute)


def registered_chart(name: str, options: dict[str, Any] | None = None) -> nn.Module:
    """The registered chart ``name`` built with ``options``."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(
            f"No chart named {name!r} is registered (known: {sorted(_REGISTRY)}); import the "
            "module that registers it, or pass the chart: sbi_mflow.load(path, chart=...)."
        )
    return _REGISTRY[name](**(options or {}))


def chart_identity(chart: nn.Module) -> dict[str, Any] | None:
    """``{"name", "options"}`` of a chart whose exact class is registered, else None."""
    _load_builtins()
    name = next((key for key, cls in _REGISTRY.items() if type(chart) is cls), None)
    if name is None:
        return None
    return {"name": name, "options": copy.deepcopy(dict(getattr(chart, "options", {})))}

