"""Encoders e: R^d → R^n, the chart coordinates u = e(x) of a data point.

* :class:`ChartEncoder` (M-flow, PIE, FOM): the chart's own inverse (for a learned chart
  the first n components of f(x)), so e(g(u)) = u exactly;
* :class:`NetworkEncoder` (Me-flow): a separate, unrestricted network on standardised x,
  trained with the chart to minimise the reconstruction error ‖x − g(e(x))‖.

Both return a :class:`~sbi_mflow.flows.chart.ChartPoint` and re-initialise themselves
(:meth:`reinitialize`).

References:
    Brehmer, Cranmer. Flows for simultaneous manifold learning and density estimation.
    NeurIPS 2020, sections 2.2 (M-flow) and 2.3 (Me-flow).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from sbi_mflow.flows.chart import ChartPart, ChartPoint

__all__ = ["ChartEncoder", "NetworkEncoder"]


class ChartEncoder(nn.Module):
    """u = the chart's own inverse (no parameters of its own)."""

    def forward(self, x: Tensor, chart: ChartPart, context: Tensor | None = None) -> ChartPoint:
        return chart.encode(x, context)

    def reinitialize(self) -> None:
        """Nothing to draw."""


class NetworkEncoder(nn.Module):
    """u = network((x − mean) / std): Me-flow's separate encoder network.

    Args:
        network_recipe: ``network_recipe() -> nn.Module`` mapping standardised x (B, d) to
            u (B, n), with fresh random weights on every call (e.g. a ``functools.partial``
            of nflows' ``ResidualNet``); :meth:`reinitialize` calls it again.
    """

    def __init__(self, network_recipe: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.network = network_recipe()
        self.network_recipe = network_recipe

    def forward(self, x: Tensor, chart: ChartPart, context: Tensor | None = None) -> ChartPoint:
        return ChartPoint(self.network(chart.standardized(x)))

    def reinitialize(self) -> None:
        """Fresh weights for the network."""
        self.network.load_state_dict(self.network_recipe().state_dict())
