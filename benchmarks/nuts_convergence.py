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
    python -m benchmarks.nuts_convergence --report      # its section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import statistics
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
from benchmarks._results import (
    RESULTS,
    describe_machine,
    git_commit,
    load_result,
    machine,
    markdown_table,
    write_result,
)
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
#: R̂ below this counts as converged in the section's summary.
RHAT_CONVERGED = 1.01

__all__ = ["SETTINGS", "main", "report", "section"]
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
        options = _options(first.get("options", SETTINGS.get(setting, {})))
        lines.append(
            f"| {simulations} | {seed} | `{options}` | {first['chains']} × "
            f"{first['draws_per_chain']} ({first['thin']}) | {values('r_hat_max', 4)} | "
            f"{values('ess_bulk_min', 0)} | {values('mean_leapfrog_steps', 1)} | "
            f"{values('seconds', 0)} | {values('posterior_mmd_squared', 4)} | "
            f"{values('posterior_c2st', 3)} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--simulations", type=int, nargs="+", default=[10_000, 20_000],
                        help="training budgets; 20 000 is run for the first seed only")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--report", action="store_true", help="Markdown from the JSON file")
    return parser


def _options(options: dict[str, Any]) -> str:
    """A setting as the keyword arguments it passes (the library's defaults for the rest)."""
    if not options:
        return "defaults"
    return ", ".join(f"{key}={value}" for key, value in options.items())


def _command(runs: list[dict[str, Any]]) -> str:
    """The command line that runs these seeds, budgets, settings and repeats."""
    defaults = {action.dest: action.default for action in _parser()._actions}
    seeds = sorted({r["seed"] for r in runs})
    used = {"seeds": seeds, "simulations": sorted({r["simulations"] for r in runs}),
            "repeats": max(r["repeat"] for r in runs) + 1,
            "settings": list(dict.fromkeys(r["setting"] for r in runs))}
    words = ["python -m benchmarks.nuts_convergence", "--seeds", *map(str, seeds)]
    for key in ("simulations", "repeats", "settings"):
        value = used[key]
        if value != defaults[key] and not (key == "settings" and set(value) == set(SETTINGS)):
            words += [f"--{key}", *map(str, value if isinstance(value, list) else [value])]
    return " ".join(words)


def section() -> str:
    """The "Convergence at 1000 draws" section of docs/benchmarks.md from
    ``benchmarks/results/nuts_convergence.json`` ("" when it is not committed)."""
    record = load_result(NAME)
    if record is None or not record.get("runs"):
        return ""
    runs = record["runs"]
    draws = runs[0]["chains"] * runs[0]["draws_per_chain"]
    repeats = max(r["repeat"] for r in runs) + 1
    settings = {r["setting"]: r.get("options", SETTINGS.get(r["setting"], {})) for r in runs}
    budgets = "; ".join(
        f"N = {n} for seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
        for n in sorted({r["simulations"] for r in runs})
        if (seeds := sorted({r["seed"] for r in runs if r["simulations"] == n})))
    summary = []
    for simulations in sorted({r["simulations"] for r in runs}):
        for name in settings:
            rows = [r for r in runs if (r["simulations"], r["setting"]) == (simulations, name)]
            if not rows:
                continue
            converged = sum(r["r_hat_max"] < RHAT_CONVERGED for r in rows)
            summary.append([
                simulations, f"`{_options(settings[name])}`", len(rows),
                f"{converged} of {len(rows)}", f"{max(r['r_hat_max'] for r in rows):.4f}",
                f"{min(r['ess_bulk_min'] for r in rows):.0f}",
                f"{statistics.median(r['mean_leapfrog_steps'] for r in rows):.1f}",
                f"{statistics.median(r['seconds'] for r in rows):.0f}",
                f"{statistics.median(r['posterior_mmd_squared'] for r in rows):.4f}"])
    return (
        f"## Convergence at {draws} draws (`{_command(runs)}`)\n\n"
        f"`posterior.sample_arviz({draws}, x=x_o)` on the M-flows that `sbi-mflow demo "
        f"--seed k --simulations N` trains ({budgets}), x_o the demo's observations, "
        f"{repeats} sampling seeds per row (\" / \" between them); a setting is the keyword "
        "arguments given to `manifold_posterior`, the library's defaults for the rest. "
        "R̂ is the largest rank-normalised split R̂ over θ, bulk ESS the smallest; leapfrog "
        "steps are the mean per transition, seconds the wall time of the call, and MMD² and "
        "C2ST compare the draws with the simulator's reference posterior (0 and 0.5: "
        "indistinguishable).\n\n"
        + report(runs) + "\n\n"
        "Per budget and setting, over seeds and repeats (medians of steps, seconds and "
        "MMD²):\n\n"
        + markdown_table(["simulations", "setting", "runs", f"R̂ < {RHAT_CONVERGED:g}",
                          "R̂ max", "bulk ESS min", "leapfrog steps / transition",
                          "seconds", "MMD²"], summary)
        + f"\n\nMachine: {describe_machine(record)}.\n")


def main() -> None:
    args = _parser().parse_args()
    if args.report:
        print(section(), end="")
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
