"""Simulations past one machine: chunked, seeded, resumable runs on Dask with a Zarr store.

``simulate(simulator, θ, store=..., client=...)`` cuts θ into chunks, runs them in this
process or as tasks on a Dask distributed cluster (a ``LocalCluster``, or HPC batch jobs
through dask-jobqueue) and writes each finished chunk to a Zarr group;
``load_simulations(store)`` reads it back, also mid-run.
"""

from sbi_mflow.simulation.result import SimulationResult
from sbi_mflow.simulation.runner import SimulationWarning, load_simulations, simulate

__all__ = ["SimulationResult", "SimulationWarning", "load_simulations", "simulate"]
