"""Simulators with data on known manifolds, usable with sbi and sbi-mflow.

All share the :class:`Simulator` interface (``prior``, ``manifold_dim``, ``data_dim``,
``param_dim``, ``default_theta``, ``__call__``, ``simulate_with_score``, ``log_likelihood``,
``distance_to_manifold``, ``reference_posterior``). Randomness comes from torch's global CPU
RNG: seed with ``torch.manual_seed``. Simulators whose manifold has a chart expose it as a
torch module with ``manifold_chart()`` (``decode``/``encode``, an ``sbi_mflow.PrescribedChart``
for the "fom" model): :class:`PolynomialSurface` and :class:`ConditionalSphere`.
"""

from .base import Simulator
from .lorenz import LorenzAttractor
from .particle_decay import ParticleDecay
from .polynomial_surface import PolynomialSurface, PolynomialSurfaceChart
from .sphere import ConditionalSphere, StereographicSphereChart

__all__ = [
    "Simulator",
    "PolynomialSurface",
    "PolynomialSurfaceChart",
    "ConditionalSphere",
    "StereographicSphereChart",
    "LorenzAttractor",
    "ParticleDecay",
]
