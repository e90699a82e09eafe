"""Does the default posterior converge at the request size users make most (1000 draws)?

For M-flows trained on ``PolynomialSurface`` as the demo trains them (``sbi-mflow demo``'s
simulations, 40 epochs, seed k for k in ``--seeds``; and one on 20 000 simulations), samples
``posterior.sample_arviz(1000, x=x_o)`` (x_o: the demo's 20 trials at θ = 0) with each
sampler setting in ``SETTINGS`` and ``--repeats`` sampling seeds, and records rank-normalised
split R̂ (max over θ), bulk ESS (min), mean leapfrog steps per transition, per-chain
acceptance, the wall time of the call, and MMD² / C2ST against the true posterior.

Each finished (model, setting, repeat) is written to
``benchmarks/results/nuts_convergence.json`` as it lands, and a rerun skips those already
there (``--fresh`` starts over). Run (one torch thread, as the demo)::

    python -m benchmarks.nuts_convergence --seeds 0 1 2 --repeats 2
    python -m benchmarks.nuts_convergence --report      # the table in docs/results.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import torch

import sbi_mflow
from benchmarks._results import RESULTS, git_commit, machine, write_result
from sbi_mflow import metrics
from simulators import PolynomialSurface

#: Sampler settings compared: the defaults of this commit, the same with 4 chains, and the
#: defaults before it (20 chains, every transition kept, each chain's own mass matrix).
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "4-chains": {"num_chains": 4},
    "previous-default": {"num_chains": 20, "thin": 1, "pooled_mass_matrix": False},
}
NAME = "nuts_convergence"
CACHE = Path(__file__).resolve().parent / ".cache"


def _model(simulations: int, seed: int) -> tuple[Any, Any]:
    """The M-flow of ``sbi-mflow demo --simulations N --seed k``, run once into
    ``benchmarks/.cache/`` (git-ignored) and loaded from there afterwards."""
    folder = CACHE / f"demo-n{simulations}-seed{seed}"
    if not (folder / "model.pt").exists():
        subprocess.run([sys.executable, "-m", "sbi_mflow.cli", "demo", "--seed", str(seed),
                        "--simulations", str(simulations), "--out", str(folder), "--force",
                        "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return PolynomialSurface(), sbi_mflow.load(folder / "model.pt")


def _observations(simulator, seed: int, trials: int = 20) -> torch.Tensor:
    torch.manual_seed(seed + 1)  # as the demo draws x_o
    return simulator(simulator.default_theta.expand(trials, -1))


def _measure(estimator, simulator, x_o, reference, options: dict[str, Any],
             repeat: int, seed: int) -> dict[str, Any]:
    posterior = sbi_mflow.manifold_posterior(estimator, simulator.prior,
                                             check_convergence=False, **options)
    start = time.perf_counter()
    idata = posterior.sample_arviz(1000, x=x_o, seed=repeat)
    seconds = time.perf_counter() - start
    values = idata.posterior["theta"].values
    samples = torch.as_tensor(values.reshape(-1, values.shape[-1]), dtype=torch.float32)
    stats = idata.sample_stats
    return {
        "chains": int(values.shape[0]),
        "draws_per_chain": int(values.shape[1]),
        "thin": int(idata.posterior.attrs["thin"]),
        "r_hat_max": float(np.max(az.rhat(idata, var_names=["theta"])["theta"].values)),
        "ess_bulk_min": float(np.min(
            az.ess(idata, var_names=["theta"], method="bulk")["theta"].values)),
        "mean_leapfrog_steps": float(stats["n_steps"].values.mean()),
        "mean_acceptance": float(stats["acceptance_rate"].values.mean()),
        "seconds": seconds,
        "posterior_mmd_squared": float(metrics.mmd_squared(samples[:1000], reference)),
        "posterior_c2st": float(metrics.c2st(samples[:1000], reference, seed=seed)),
    }


def report(runs: list[dict[str, Any]]) -> str:
    """Markdown: one row per (model, setting), each repeat's value separated by " / "."""
    lines = ["| simulations | seed | setting | chains × draws (thin) | R̂ max | bulk ESS min | "
             "leapfrog steps / transition | seconds | MMD² | C2ST |", "|" + "---|" * 10]
    keys = dict.fromkeys((r["simulations"], r["seed"], r["setting"]) for r in runs)
    for simulations, seed, setting in sorted(keys, key=lambda k: (k[0], k[1])):
        rows = [r for r in runs if (r["simulations"], r["seed"], r["setting"])
                == (simulations, seed, setting)]

        def values(name: str, digits: int, rows=rows) -> str:
            return " / ".join(f"{r[name]:.{digits}f}" for r in rows)

        first = rows[0]
        lines.append(
            f"| {simulations} | {seed} | {setting} | {first['chains']} × "
            f"{first['draws_per_chain']} ({first['thin']}) | {values('r_hat_max', 4)} | "
            f"{values('ess_bulk_min', 0)} | {values('mean_leapfrog_steps', 1)} | "
            f"{values('seconds', 0)} | {values('posterior_mmd_squared', 4)} | "
            f"{values('posterior_c2st', 3)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--simulations", type=int, nargs="+", default=[10_000, 20_000],
                        help="training budgets; 20 000 is run for the first seed only")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--report", action="store_true", help="Markdown from the JSON file")
    args = parser.parse_args()
    if args.report:
        print(report(json.loads((RESULTS / f"{NAME}.json").read_text())["runs"]))
        return
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    path = RESULTS / f"{NAME}.json"
    runs = [] if args.fresh or not path.exists() else json.loads(path.read_text())["runs"]
    done = {(r["simulations"], r["seed"], r["setting"], r["repeat"]) for r in runs}
    models = [(n, seed) for n in args.simulations for seed in args.seeds
              if n == min(args.simulations) or seed == args.seeds[0]]
    for simulations, seed in models:
        todo = [(name, rep) for name in args.settings for rep in range(args.repeats)
                if (simulations, seed, name, rep) not in done]
        if not todo:
            continue
        simulator, estimator = _model(simulations, seed)
        x_o = _observations(simulator, seed)
        reference = simulator.reference_posterior(x_o, 1000)
        for name, repeat in todo:
            row = {"simulations": simulations, "seed": seed, "setting": name,
                   "options": SETTINGS[name], "repeat": repeat, "commit": git_commit(),
                   **_measure(estimator, simulator, x_o, reference, SETTINGS[name],
                              repeat, seed)}
            print(json.dumps(row), flush=True)
            runs.append(row)
            write_result(NAME, {"machine": machine(), "note": __doc__.splitlines()[0],
                                "runs": runs})


if __name__ == "__main__":
    main()
