"""Does the manifold phase stall? Held-out reconstruction over seeds, with and without the fixes.

``PolynomialSurface`` by default, 4000 simulations, library defaults, 20 manifold epochs
(``max_num_epochs = 40``; the density phase is cut to one epoch since only the manifold is
scored). For each seed: the held-out mean squared reconstruction error E‖x − g(e(x))‖² on
2000 fresh simulations (the issue's target: ≤ 0.02 on every seed), its median, the same per
standardised coordinate (1/d) E‖x̃ − x̃'‖² (the ParticleDecay target: ≤ 1e-3), the
trainer's stall check, and the wall time. Variants:

* ``plain``: no tangent alignment, one initialisation, no restart;
* ``aligned``: tangent alignment, one initialisation, no restart;
* ``candidates``: no tangent alignment, the best of 3 candidate initialisations, no restart;
* ``aligned-candidates-retries``: tangent alignment, 3 candidates and up to two restarts
  from fresh weights when the stall check fails (the library defaults until 2dc811e);
* ``manifold-lr-1e-2``: the library defaults with the manifold phase's learning rate at
  1e-2 instead of the default 3 × 1e-3;
* ``hidden-100``: the library defaults with conditioner nets 100 wide (the paper's) instead of 64;
* ``no-graph-layer``: the library defaults without the chart's graph layer (the defaults
  before 0.2.0.dev2);
* ``default``: the library defaults of the commit that runs.

Writes ``benchmarks/results/manifold_stall[_<simulator>].json``. Run:
``python -m benchmarks.manifold_stall [--variants default] [--seeds 0 1 2 ...]``, or
``--simulator particle-decay --simulations 10000 --epochs 25 --seeds 0``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

import sbi_mflow
from benchmarks._results import RESULTS, machine, write_result
from sbi_mflow.pipeline import make_simulator
from sbi_mflow.tracking import NullTracker

VARIANTS = {
    "plain": (dict(tangent_alignment=False), dict(manifold_candidates=1, manifold_retries=0)),
    "aligned": (dict(tangent_alignment=True), dict(manifold_candidates=1, manifold_retries=0)),
    "candidates": (dict(tangent_alignment=False),
                   dict(manifold_candidates=3, manifold_retries=0)),
    "aligned-candidates-retries": (dict(tangent_alignment=True),
                                   dict(manifold_candidates=3, manifold_retries=2)),
    "manifold-lr-1e-2": ({}, dict(manifold_learning_rate=1e-2)),
    "hidden-100": (dict(hidden_features=100), {}),
    "no-graph-layer": (dict(graph_layer=False), {}),
    "default": ({}, {}),  # the library defaults of the commit that runs
}


def run(variant: str, seed: int, simulator_name: str, simulations: int, epochs: int) -> dict:
    build_options, train_options = VARIANTS[variant]
    torch.manual_seed(seed)
    simulator = make_simulator(simulator_name)
    theta = simulator.prior.sample((simulations,))
    x = simulator(theta)
    build = sbi_mflow.manifold_likelihood_nn("mflow", simulator.manifold_dim, **build_options)
    inference = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=build,
                                      show_progress_bars=False, tracker=NullTracker())
    inference.append_simulations(theta, x)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", sbi_mflow.ManifoldStallWarning)
        estimator = inference.train(schedule="sequential", max_num_epochs=2 * epochs,
                                    density_epochs=1, **train_options)
    seconds = time.perf_counter() - started
    torch.manual_seed(1000 + seed)
    x_test = simulator(simulator.prior.sample((2000,)))
    with torch.no_grad():
        projected = estimator.project(x_test)
        errors = (x_test - projected).pow(2).sum(-1)
        scale = x.std(0)  # the training data's standard deviations
        standardized = ((x_test - projected) / scale).pow(2).mean()
    return {
        "variant": variant, "seed": seed,
        "reconstruction_mse": float(errors.mean()),
        "reconstruction_median": float(errors.median()),
        "standardized_mse_per_coordinate": float(standardized),
        "stall_warning": any(isinstance(w.message, sbi_mflow.ManifoldStallWarning)
                             for w in caught),
        "manifold_check": inference.summary["manifold_check"],
        "selection": inference.summary["manifold_selection"],
        "attempts": inference.summary["manifold_attempts"],
        # per epoch, candidate probes and attempts included; the last entry is the density
        # epoch
        "validation_curve": inference.summary["validation_loss"],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--simulator", default="polynomial-surface",
                        choices=["polynomial-surface", "particle-decay"])
    parser.add_argument("--simulations", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=20, help="manifold epochs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    name = "manifold_stall" + ("" if args.simulator == "polynomial-surface"
                               else f"_{args.simulator.replace('-', '_')}")
    path = RESULTS / f"{name}.json"
    previous = json.loads(path.read_text())["runs"] if path.exists() else []
    runs = [r for r in previous if (r["variant"], r["seed"]) not in
            {(v, s) for v in args.variants for s in args.seeds}]
    for variant in args.variants:
        for seed in args.seeds:
            row = run(variant, seed, args.simulator, args.simulations, args.epochs)
            runs.append(row)
            print(f"{variant:>8} seed {seed}: E‖x − x'‖² = {row['reconstruction_mse']:.4f} "
                  f"(median {row['reconstruction_median']:.1e}; per standardised coordinate "
                  f"{row['standardized_mse_per_coordinate']:.1e}), stall warning "
                  f"{row['stall_warning']}, {row['seconds']:.0f} s", flush=True)
    for variant in args.variants:
        values = [r["reconstruction_mse"] for r in runs if r["variant"] == variant]
        print(f"{variant:>8}: worst {max(values):.4f}, median {statistics.median(values):.4f}, "
              f"seeds above 0.02: {sum(v > 0.02 for v in values)} of {len(values)}")
    write_result(name, {"settings": vars(args), "machine": machine(), "runs": runs})


if __name__ == "__main__":
    main()
