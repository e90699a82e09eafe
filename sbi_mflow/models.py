"""What a manifold-learning flow is made of, and the named models as presets of it.

A :class:`ModelSpec` is a small, plain description of an estimator's parts:

* ``chart``: the map between chart coordinates u ∈ R^n and the manifold in R^d. "learned":
  an outer flow f with g(u) = f⁻¹(u, 0) (M-flow, Me-flow, PIE); "prescribed": a chart g*
  the user gives, with its inverse (FOM, a flow on a prescribed manifold).
* ``encoder``: u = e(x). "chart": the chart's own inverse (a slice of f(x), or g*⁻¹);
  "network": a separate network trained to invert the chart (Me-flow).
* ``volume``: the term that turns the inner flow's log p(u | θ) into the estimator's
  density. "manifold": the density of the projected point on the manifold,
  −½ log det(J_gᵀ J_g)(u); "off-manifold": PIE's ambient density
  log N(v; 0, ε² I) + log|det ∂f/∂x| with (u, v) = f(x).
* ``conditional_manifold``: whether the chart depends on θ (the original PIE).

The names accepted by :func:`sbi_mflow.manifold_likelihood_nn` are presets of it, all in
:data:`PRESETS`, the one table that maps a model name to what it is made of. Only plain
Python values, so a spec is stored in a saved file as it is.

References:
    Brehmer, Cranmer. Flows for simultaneous manifold learning and density estimation.
    NeurIPS 2020 (M-flow, Me-flow, PIE; FOM is their Table 1's flow on the true manifold).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["CHARTS", "ENCODERS", "MODELS", "PRESETS", "VOLUMES", "ModelSpec", "model_spec"]

#: Values of the fields of :class:`ModelSpec`.
CHARTS = ("learned", "prescribed")
ENCODERS = ("chart", "network")
VOLUMES = ("manifold", "off-manifold")


@dataclass(frozen=True)
class ModelSpec:
    """The parts of a manifold-learning flow estimator (see the module docstring).

    Attributes:
        chart: "learned" (an outer flow) or "prescribed" (a chart given by the user).
        encoder: "chart" (the chart's own inverse) or "network" (Me-flow's encoder).
        volume: "manifold" (density on the manifold) or "off-manifold" (PIE's ε-Gaussian).
        conditional_manifold: whether the chart depends on θ.
    """

    chart: str = "learned"
    encoder: str = "chart"
    volume: str = "manifold"
    conditional_manifold: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("chart", CHARTS), ("encoder", ENCODERS), ("volume", VOLUMES)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"Unknown {name} {getattr(self, name)!r}; choose one of {allowed}.")
        if not isinstance(self.conditional_manifold, bool):
            raise ValueError("conditional_manifold must be True or False.")
        if self.needs_chart and (self.encoder, self.volume, self.conditional_manifold) != (
                "chart", "manifold", False):
            raise ValueError(
                "A prescribed chart is its own encoder (encoder='chart'), has no off-manifold "
                "direction (volume='manifold') and does not depend on θ "
                "(conditional_manifold=False)."
            )

    @property
    def needs_chart(self) -> bool:
        """Whether the user must supply the chart (``chart=...``)."""
        return self.chart == "prescribed"

    @property
    def density_on_manifold(self) -> bool:
        """Whether the density lives on the manifold (M/D training then applies)."""
        return self.volume == "manifold"

    @property
    def name(self) -> str | None:
        """The preset this spec is, or None for a spec composed by hand."""
        return next((name for name, spec in PRESETS.items() if spec == self), None)

    @property
    def label(self) -> str:
        """The preset name, or the fields, for messages."""
        return repr(self.name) if self.name else repr(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"Unknown model spec keys {sorted(unknown)}.")
        return cls(**values)


#: The named models: the one place that maps a model name to its parts.
PRESETS: dict[str, ModelSpec] = {
    "mflow": ModelSpec(),
    "meflow": ModelSpec(encoder="network"),
    "pie": ModelSpec(volume="off-manifold"),
    "pie-conditional": ModelSpec(volume="off-manifold", conditional_manifold=True),
    "fom": ModelSpec(chart="prescribed"),
}

#: Model names accepted by :func:`sbi_mflow.manifold_likelihood_nn`.
MODELS = tuple(PRESETS)


def model_spec(model: str | ModelSpec | dict[str, Any]) -> ModelSpec:
    """The spec of a preset name, a spec, or a spec's ``to_dict()``."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, dict):
        return ModelSpec.from_dict(model)
    if model not in PRESETS:
        raise ValueError(f"Unknown model {model!r}; choose one of {MODELS} or pass a ModelSpec.")
    return PRESETS[model]
