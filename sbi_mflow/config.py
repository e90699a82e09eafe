"""Plain, serialisable configuration of a manifold-learning flow estimator."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from sbi_mflow.models import MODELS, ModelSpec, model_spec

__all__ = ["MODELS", "ManifoldFlowConfig"]

_LINEAR_LAYERS = ("permutation", "lu")


@dataclass
class ManifoldFlowConfig:
    """What an estimator is made of (``spec``), its dimensions and its parts' sizes.

    Only plain Python types, so that ``to_dict()`` can be stored next to a state dict and
    loaded with ``torch.load(weights_only=True)``. Sizes of parts a spec does not use (e.g.
    the encoder network's of an M-flow) are ignored.

    Attributes:
        spec: the parts (:class:`~sbi_mflow.models.ModelSpec`, or a preset name such as
            "mflow", resolved on construction).
        data_dim: d, the dimension of x.
        manifold_dim: n < d, the dimension of the manifold.
        param_dim: p, the dimension of θ (0 for unconditional density estimation).
        outer_layers: number of rational-quadratic coupling layers of the outer flow f.
        inner_layers: number of coupling layers of the inner flow h.
        hidden_features: width of the residual conditioner nets.
        num_blocks: residual blocks per conditioner net.
        num_bins: spline bins K.
        tail_bound: splines are identity-with-linear-tails outside [-B, B].
        linear_layer: "permutation" or "lu" between couplings.
        encoder_hidden_features, encoder_blocks: Me-flow encoder network size.
        epsilon: PIE's off-manifold width ε.
        reconstruction_weight: weight of the reconstruction term of the simultaneous loss.
        dropout: dropout probability inside the conditioner nets.
        tangent_alignment: start the chart with a rotation of standardised x onto the
            data's average tangent space (local PCA of the training batch), so the kept
            coordinates begin on the manifold (:mod:`sbi_mflow.flows.alignment`). With the
            default 3 candidate initialisations it gave lower held-out reconstruction
            errors on 22 of 26 Table 2 seeds (12–32% lower per row; CHANGELOG.md).
        graph_layer: make the chart's first layer (after the alignment) an additive
            coupling (a, b) ↦ (a, b + μ(a)) of the d − n normal coordinates b on the n
            tangent ones a, so that the chart can represent a manifold that is the graph
            of a function over its tangent plane with one layer
            (:func:`~sbi_mflow.flows.stack.graph_coupling`). It gave lower held-out
            reconstruction errors on 32 of 40 Table 2 runs and 8 of 10 PolynomialSurface
            stall seeds (CHANGELOG.md, 0.2.0.dev2).
    """

    spec: ModelSpec
    data_dim: int
    manifold_dim: int
    param_dim: int = 0
    outer_layers: int = 5
    inner_layers: int = 5
    hidden_features: int = 64
    num_blocks: int = 2
    num_bins: int = 8
    tail_bound: float = 6.0
    linear_layer: str = "permutation"
    encoder_hidden_features: int = 100
    encoder_blocks: int = 5
    epsilon: float = 0.01
    reconstruction_weight: float = 1000.0
    dropout: float = 0.0
    tangent_alignment: bool = True
    graph_layer: bool = True

    def __post_init__(self) -> None:
        self.spec = model_spec(self.spec)
        if self.linear_layer not in _LINEAR_LAYERS:
            raise ValueError(
                f"Unknown linear_layer {self.linear_layer!r}; choose one of {_LINEAR_LAYERS}."
            )
        if self.data_dim < 2:
            raise ValueError(f"data_dim must be >= 2 to hold a manifold, got {self.data_dim}.")
        if not 1 <= self.manifold_dim < self.data_dim:
            raise ValueError(
                f"manifold_dim must satisfy 1 <= manifold_dim < data_dim = {self.data_dim}, "
                f"got manifold_dim = {self.manifold_dim}."
            )
        if self.param_dim < 0:
            raise ValueError(f"param_dim must be >= 0, got {self.param_dim}.")
        if self.spec.conditional_manifold and self.param_dim == 0:
            raise ValueError(
                f"{self.spec.label} conditions the manifold on θ and needs param_dim > 0."
            )
        for name in ("outer_layers", "inner_layers", "hidden_features", "num_blocks", "num_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.tail_bound <= 0 or self.epsilon <= 0 or self.reconstruction_weight < 0:
            raise ValueError("tail_bound and epsilon must be > 0, reconstruction_weight >= 0.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain values; the spec as a nested dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ManifoldFlowConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"Unknown configuration keys {sorted(unknown)}.")
        return cls(**values)
