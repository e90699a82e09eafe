"""Whole-run training time: sequential M/D against sbi's NLE with an NSF, on the same data.

Data: ``ParticleDecay`` (d = 40, n = 10), 10⁴ simulations by default. Our M-flow has
``outer + inner`` coupling layers and trains with the library's defaults (sequential M/D,
E/2 manifold epochs after choosing among candidate initialisations, E/2 density epochs
on cached encodings); sbi's NSF (``likelihood_nn("nsf")``) gets the same total number of
coupling layers, hidden features and bins, the same batch size and validation fraction,
and E epochs. Both run in this process, one after the other, with the same torch threads;
the times include validation passes and everything else ``train`` does. Prints the ratio
of the whole runs (issue target: ≤ 0.25 on one CPU thread at batch 100) and writes JSON to
``benchmarks/results/training_<device>.json``.

``--spline-stand-in`` replaces the spline of our couplings by a one-operation elementwise map
(``benchmarks/spline_cost.py``): a bound on what any faster spline could give.

Run: ``python -m benchmarks.training [--epochs 20] [--device cuda] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from sbi.inference import NLE
from sbi.neural_nets import likelihood_nn

import sbi_mflow
from benchmarks._results import machine, write_result
from sbi_mflow.priors import prior_on_device
from sbi_mflow.tracking import NullTracker
from sbi_mflow.training import TrainConfig
from simulators import ParticleDecay


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=20, help="E for both")
    parser.add_argument("--outer-layers", type=int, default=10)
    parser.add_argument("--inner-layers", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--candidates", type=int, default=TrainConfig.manifold_candidates,
                        help="manifold_candidates (1: exactly E epochs, no probes)")
    parser.add_argument("--retries", type=int, default=TrainConfig.manifold_retries,
                        help="manifold_retries")
    parser.add_argument("--skip-nsf", action="store_true")
    parser.add_argument("--spline-stand-in", action="store_true",
                        help="diagnostic: our couplings use a one-operation elementwise map "
                             "instead of the spline (a bound on what a faster spline gives)")
    args = parser.parse_args()
    if args.spline_stand_in:
        import sbi_mflow.flows.spline as spline_module
        from benchmarks.spline_cost import elementwise_stand_in

        # only our couplings call it; sbi's NSF uses nflows' own spline
        spline_module.rational_quadratic_spline = elementwise_stand_in
    torch.set_num_threads(args.threads)
    compile_step = {"auto": "auto", "true": True, "false": False}[args.compile]

    torch.manual_seed(0)
    simulator = ParticleDecay()
    theta = simulator.prior.sample((args.simulations,))
    x = simulator(theta)
    prior = prior_on_device(simulator.prior, args.device)
    common = dict(training_batch_size=args.batch, validation_fraction=0.1,
                  stop_after_epochs=10**6)

    build = sbi_mflow.manifold_likelihood_nn(
        "mflow", simulator.manifold_dim, outer_layers=args.outer_layers,
        inner_layers=args.inner_layers, hidden_features=args.hidden, num_bins=8,
    )
    ours = sbi_mflow.ManifoldNLE(prior, density_estimator=build, device=args.device,
                                 show_progress_bars=False, tracker=NullTracker())
    ours.append_simulations(theta, x)
    _sync(args.device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours.train(schedule="sequential", max_num_epochs=args.epochs, compile=compile_step,
                   manifold_candidates=args.candidates, manifold_retries=args.retries,
                   **common)
    _sync(args.device)
    ours_total = time.perf_counter() - start
    seconds = {"manifold": [], "density": []}
    for entry in ours.summary["phases"]:
        seconds[entry["phase"]].append(entry["seconds"])
    check = ours.summary.get("manifold_check") or {}

    nsf_total = nsf_epoch = None
    layers = args.outer_layers + args.inner_layers
    if not args.skip_nsf:
        nsf_build = likelihood_nn("nsf", num_transforms=layers, hidden_features=args.hidden,
                                  num_bins=8)
        nsf = NLE(prior, density_estimator=nsf_build, device=args.device,
                  show_progress_bars=False, tracker=NullTracker())
        nsf.append_simulations(theta, x)
        _sync(args.device)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "max_num_epochs reached"
            nsf.train(max_num_epochs=args.epochs, **common)
        _sync(args.device)
        nsf_total = time.perf_counter() - start
        nsf_epoch = statistics.mean(nsf.summary["epoch_durations_sec"])

    print(f"\nParticleDecay d={simulator.data_dim}, n={simulator.manifold_dim}, "
          f"{args.simulations} simulations, batch {args.batch}, E = {args.epochs}, device "
          f"{args.device}, torch threads {torch.get_num_threads()}")
    print(f"  M/D (M-flow {args.outer_layers}+{args.inner_layers} couplings, library "
          f"defaults): {ours_total:.1f} s in all; {len(seconds['manifold'])} manifold epochs "
          f"(candidates included) at {statistics.mean(seconds['manifold']):.2f} s, "
          f"{len(seconds['density'])} density epochs at "
          f"{statistics.mean(seconds['density']):.2f} s; held-out reconstruction "
          f"{check.get('reconstruction', float('nan')):.3g} per standardised coordinate")
    ratio = None
    if nsf_total is not None:
        ratio = ours_total / nsf_total
        print(f"  sbi NLE nsf ({layers} couplings): {nsf_total:.1f} s in all, "
              f"{nsf_epoch:.2f} s/epoch")
        print(f"  ratio of the whole runs M/D / NSF: {ratio:.3f} (target <= 0.25 on CPU)")
    defaults = (TrainConfig.manifold_candidates, TrainConfig.manifold_retries)
    chosen = (args.candidates, args.retries)
    tag = "" if chosen == defaults else f"_c{args.candidates}r{args.retries}"
    tag += "_spline_stand_in" if args.spline_stand_in else ""
    path = write_result(f"training_{args.device.split(':')[0]}{tag}", {
        "settings": vars(args), "machine": machine(args.device),
        "md_seconds": ours_total, "md_epoch_seconds": seconds,
        "manifold_check": check, "manifold_attempts": ours.summary.get("manifold_attempts"),
        "nsf_seconds": nsf_total, "nsf_epoch_seconds": nsf_epoch,
        "ratio": ratio,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
