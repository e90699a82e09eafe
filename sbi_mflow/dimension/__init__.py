"""The dimension of the manifold simulated data lie on (Brehmer & Cranmer 2020, section 3)."""

from sbi_mflow.dimension.cross_validation import ChartScore
from sbi_mflow.dimension.estimate import estimate_manifold_dim
from sbi_mflow.dimension.result import ManifoldDimEstimate
from sbi_mflow.dimension.selection import DimensionSearchConfig

__all__ = ["ChartScore", "DimensionSearchConfig", "ManifoldDimEstimate", "estimate_manifold_dim"]
