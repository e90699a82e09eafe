"""Compatibility path: the chain runner lives in :mod:`sbi_mflow.sampling.chains`."""

from sbi_mflow.sampling.chains import ChainResult, run_chains

__all__ = ["ChainResult", "run_chains"]
