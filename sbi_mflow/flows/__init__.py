"""Parts of a manifold-learning flow: splines, flow stacks, charts (learned and
prescribed), encoders, inner flow, volume terms."""

from sbi_mflow.flows.chart import Chart, ChartPart, ChartPoint, Standardization
from sbi_mflow.flows.encoder import ChartEncoder, NetworkEncoder
from sbi_mflow.flows.inner import InnerFlow
from sbi_mflow.flows.prescribed import ExactChart, PrescribedChart, register_chart
from sbi_mflow.flows.spline import SplineCoupling, rational_quadratic_spline
from sbi_mflow.flows.stack import StableLULinear, build_chart_body, build_spline_stack
from sbi_mflow.flows.volume import ManifoldVolume, OffManifoldGaussian, VolumeTerm

__all__ = [
    "Chart",
    "ChartEncoder",
    "ChartPart",
    "ChartPoint",
    "ExactChart",
    "InnerFlow",
    "ManifoldVolume",
    "NetworkEncoder",
    "OffManifoldGaussian",
    "PrescribedChart",
    "SplineCoupling",
    "StableLULinear",
    "Standardization",
    "VolumeTerm",
    "build_chart_body",
    "build_spline_stack",
    "rational_quadratic_spline",
    "register_chart",
]
