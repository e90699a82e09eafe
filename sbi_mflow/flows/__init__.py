"""Parts of a manifold-learning flow: splines, flow stacks, chart, encoders, inner flow,
volume terms."""

from sbi_mflow.flows.chart import Chart, ChartPoint, Standardization
from sbi_mflow.flows.encoder import ChartEncoder, NetworkEncoder
from sbi_mflow.flows.inner import InnerFlow
from sbi_mflow.flows.spline import SplineCoupling, rational_quadratic_spline
from sbi_mflow.flows.stack import StableLULinear, build_spline_stack
from sbi_mflow.flows.volume import ManifoldVolume, OffManifoldGaussian, VolumeTerm

__all__ = [
    "Chart",
    "ChartEncoder",
    "ChartPoint",
    "InnerFlow",
    "ManifoldVolume",
    "NetworkEncoder",
    "OffManifoldGaussian",
    "SplineCoupling",
    "StableLULinear",
    "Standardization",
    "VolumeTerm",
    "build_spline_stack",
    "rational_quadratic_spline",
]
