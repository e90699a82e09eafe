"""Simulators with data on known manifolds, usable with sbi and sbi-mflow.

All share the :class:`Simulator` interface (``prior``, ``manifold_dim``, ``data_dim``,
``param_dim``, ``default_theta``, ``__call__``, ``simulate_with_score``, ``log_likelihood``,
``distance_to_manifold``, ``reference_posterior``). Randomness comes from torch's global CPU
RNG: seed with ``torch.manual_seed``.
"""

from .base import Simulator
from .lorenz import LorenzAttractor
from .particle_decay import ParticleDecay
from .polynomial_surface import PolynomialSurface
from .sphere import ConditionalSphere

__all__ = [
    "Simulator",
    "PolynomialSurface",
    "ConditionalSphere",
    "LorenzAttractor",
    "ParticleDecay",
]
