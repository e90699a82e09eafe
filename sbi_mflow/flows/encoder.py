"""Encoders e: R^d → R^n, the chart coordinates u = e(x) of a data point.

* :class:`ChartEncoder` (M-flow, PIE): u is the first n components of f(x), a slice of the
  chart itself, so e(g(u)) = u exactly;
* :class:`NetworkEncoder` (Me-flow): a separate, unrestricted network on standardised x,
  trained with the chart to minimise the reconstruction error ‖x − g(e(x))‖.

Both return a :class:`~sbi_mflow.flows.chart.ChartPoint`.

References:
    Brehmer, Cranmer. Flows for simultaneous manifold learning and density estimation.
    NeurIPS 2020, sections 2.2 (M-flow) and 2.3 (Me-flow).
"""

from __future__ import annotations

from torch import Tensor, nn

from sbi_mflow.flows.chart import Chart, ChartPoint

__all__ = ["ChartEncoder", "NetworkEncoder"]


class ChartEncoder(nn.Module):
    """u = f(x)_{1:n}: the chart's own inverse (no parameters of its own)."""

    def forward(self, x: Tensor, chart: Chart, context: Tensor | None = None) -> ChartPoint:
        return chart.encode(x, context)


class NetworkEncoder(nn.Module):
    """u = network((x − mean) / std): Me-flow's separate encoder network.

    Args:
        network: maps standardised x (B, d) to u (B, n).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor, chart: Chart, context: Tensor | None = None) -> ChartPoint:
        return ChartPoint(self.network(chart.standardized(x)))
