"""Compatibility path: the posterior lives in :mod:`sbi_mflow.sampling.posterior`."""

from sbi_mflow.sampling.posterior import ManifoldPosterior, manifold_posterior

__all__ = ["ManifoldPosterior", "manifold_posterior"]
