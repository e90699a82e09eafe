"""Benchmark: the cost of sampling B observations in one joint NUTS state.

``posterior.sample_batched`` runs the C chains of each of B observations as one Pyro NUTS
state of B·C·p coordinates: each observation keeps its own chains, starts, mass matrix and
diagnostics, but the step size ε, the trajectory and the accept decision are shared. For a
product of N independent targets, the energy error of a leapfrog trajectory adds up over
the N factors, so the step size that keeps the joint acceptance at its target shrinks like
ε ∝ N^(-1/4) (Beskos et al. 2013, "Optimal tuning of the hybrid Monte Carlo algorithm"),
and a trajectory that reaches the U-turn of the slowest factor needs ∝ 1/ε leapfrog
steps: the cost per draw and observation grows like N^(1/4), while the cost per leapfrog
step is shared by the N factors.

This script measures it on the demo model (PolynomialSurface, the M-flow ``sbi-mflow demo``
trains, cached by ``benchmarks/calibration.py``): for each B in ``--batches``,
``sample_batched((S,), x=xs[:B])`` with the library's defaults; the adapted step size, the
leapfrog steps per transition, the wall time per observation and the bulk ESS per second per
observation, and the fitted log-log slope of the steps against N = B·C.

Command line (one torch thread; about 15 minutes)::

    python -m benchmarks.batched_nuts
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch

import sbi_mflow
from benchmarks._results import (
    describe_machine,
    load_result,
    machine,
    markdown_table,
    write_result,
)
from benchmarks.calibration import PolynomialSurfaceTask

__all__ = ["main", "measure", "section"]


def measure(posterior, xs: torch.Tensor, draws: int, seed: int) -> dict:
    """One batched run over the observations ``xs``: time, step size, steps, ESS."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        posterior.sample_batched((draws,), x=xs)
    seconds = time.perf_counter() - start
    info = posterior.chain_result.info
    ess = sorted(s.min_ess_bulk for s in posterior.convergence)
    median_ess = ess[len(ess) // 2]
    return {
        "observations": len(xs),
        "chains": int(info.num_steps.shape[0]),
        "seconds": seconds,
        "seconds_per_observation": seconds / len(xs),
        "step_size": float(info.step_size.median()),
        "leapfrog_steps_per_transition": float(info.num_steps.float().mean()),
        "median_ess_bulk": median_ess,
        "ess_per_second_per_observation": median_ess * len(xs) / seconds,
        "max_rhat": max(s.max_rhat for s in posterior.convergence),
    }


def section() -> str:
    """The "One NUTS state for B observations" section of docs/benchmarks.md from
    ``benchmarks/results/batched_nuts.json`` ("" when it is not committed)."""
    record = load_result("batched_nuts")
    if record is None or not record.get("rows"):
        return ""
    settings, sampler, rows = record.get("settings", {}), record.get("sampler", {}), record["rows"]
    table = markdown_table(
        ["observations B", "chains B·C", "step size", "leapfrog steps / transition",
         "s per observation", "bulk ESS/s per observation", "R̂ max"],
        [[row["observations"], row["chains"], f"{row['step_size']:.3f}",
          f"{row['leapfrog_steps_per_transition']:.1f}",
          f"{row['seconds_per_observation']:.2f}",
          f"{row['ess_per_second_per_observation']:.0f}", f"{row['max_rhat']:.3f}"]
         for row in rows])
    table = table.replace("|---|---|---|---|---|---|---|", "|---:|---:|---:|---:|---:|---:|---:|")
    first, fastest = rows[0], min(rows, key=lambda row: row["seconds_per_observation"])
    chains = sampler.get("batch_num_chains", first["chains"] // first["observations"])
    warmup = f", {sampler['warmup_steps']} warm-up steps" if "warmup_steps" in sampler else ""
    return (
        "## One NUTS state for B observations (`python -m benchmarks.batched_nuts`)\n\n"
        f"`posterior.sample_batched(({settings.get('draws', '?')},), x=xs[:B])` on the demo's "
        f"M-flow (`sbi-mflow demo`, {settings.get('simulations', '?')} simulations, seed "
        f"{settings.get('seed', '?')}) for B observations simulated at prior draws, with the "
        f"sampler's defaults ({chains} chains per observation{warmup}). The C chains of all "
        "B observations form one Pyro NUTS state: each observation keeps its own chains, "
        "mass matrix and diagnostics, but the step size and the trajectory are shared. For a "
        "product of N independent targets the step size that holds the acceptance rate "
        "shrinks like N^(-1/4) and the trajectories lengthen like N^(1/4), while each leapfrog "
        "step is one batched pass over all N = B·C chains. Step size: median adapted; "
        "leapfrog steps: mean per transition; bulk ESS/s per observation: median over the "
        "observations of the smallest bulk ESS, times B, over the wall time; R̂: largest "
        "over the observations.\n\n"
        + table + "\n\n"
        f"Least-squares fit: leapfrog steps ∝ (B·C)^{record['steps_slope_vs_chains']:.2f}. "
        f"Time per observation at B = {fastest['observations']}: "
        f"{first['seconds_per_observation'] / fastest['seconds_per_observation']:.1f}× less "
        f"than at B = {first['observations']}.\n\n"
        f"Machine: {describe_machine(record)}.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 5, 25, 100])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = PolynomialSurfaceTask()
    estimator = sbi_mflow.load(task.mflow(args))
    torch.manual_seed(args.seed + 1000)
    xs = task.simulate(task.prior.sample((max(args.batches),)))
    inference = sbi_mflow.ManifoldNLE(task.prior, show_progress_bars=False)
    inference.append_simulations(*task.simulations(args.simulations, args.seed))
    posterior = inference.build_posterior(density_estimator=estimator)
    rows = []
    for batch in args.batches:
        rows.append(measure(posterior, xs[:batch], args.draws, args.seed))
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()},
              flush=True)
    # least-squares slope of log(steps) against log(chains)
    logs = [(math.log(r["chains"]), math.log(r["leapfrog_steps_per_transition"])) for r in rows]
    mean_x = sum(x for x, _ in logs) / len(logs)
    mean_y = sum(y for _, y in logs) / len(logs)
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in logs)
             / max(sum((x - mean_x) ** 2 for x, _ in logs), 1e-12))
    print(f"leapfrog steps ∝ (B·C)^{slope:.2f}")
    write_result("batched_nuts", {"machine": machine(), "settings": vars(args),
                                  "sampler": posterior.config.__dict__, "rows": rows,
                                  "steps_slope_vs_chains": slope})


if __name__ == "__main__":
    main()
