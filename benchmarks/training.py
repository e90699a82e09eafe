"""Time per epoch of M/D training against sbi's NLE with an NSF, on the same data.

Data: ``ParticleDecay`` (d = 40). Our M-flow has ``outer + inner`` coupling layers; sbi's
NSF gets the same total number of coupling layers, hidden features and bins, the same
batch size and validation fraction. Both times include the validation pass. Prints the
mean seconds per epoch of each and their ratio (target: M/D no slower than NSF).

Run: ``python benchmarks/training.py [--simulations 10000] [--epochs 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from sbi.inference import NLE
from sbi.neural_nets import likelihood_nn

import sbi_mflow
from sbi_mflow.tracking import NullTracker
from simulators import ParticleDecay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per phase / for NSF")
    parser.add_argument("--outer-layers", type=int, default=10)
    parser.add_argument("--inner-layers", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    simulator = ParticleDecay()
    theta = simulator.prior.sample((args.simulations,))
    x = simulator(theta)
    common = dict(training_batch_size=args.batch, validation_fraction=0.1,
                  max_num_epochs=args.epochs, learning_rate=5e-4)

    build = sbi_mflow.manifold_likelihood_nn(
        "mflow", simulator.manifold_dim, outer_layers=args.outer_layers,
        inner_layers=args.inner_layers, hidden_features=args.hidden, num_bins=8,
    )
    ours = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=build, device=args.device,
                                 show_progress_bars=False, tracker=NullTracker())
    ours.append_simulations(theta, x)
    start = time.time()
    ours.train(schedule="sequential", stop_after_epochs=10**6, **{**common,
               "max_num_epochs": 2 * args.epochs})
    ours_total = time.time() - start
    by_phase = {"manifold": [], "density": []}
    for entry in ours.summary["phases"]:
        by_phase[entry["phase"]].append(entry["seconds"])
    md_epoch = statistics.mean(by_phase["manifold"] + by_phase["density"])

    layers = args.outer_layers + args.inner_layers
    nsf_build = likelihood_nn("nsf", num_transforms=layers, hidden_features=args.hidden,
                              num_bins=8)
    nsf = NLE(simulator.prior, density_estimator=nsf_build, device=args.device,
              show_progress_bars=False, tracker=NullTracker())
    nsf.append_simulations(theta, x)
    start = time.time()
    nsf.train(stop_after_epochs=10**6, **{**common, "max_num_epochs": args.epochs - 1})
    nsf_total = time.time() - start
    nsf_epoch = statistics.mean(nsf.summary["epoch_durations_sec"])

    print(f"\nParticleDecay d={simulator.data_dim}, n={simulator.manifold_dim}, "
          f"{args.simulations} simulations, batch {args.batch}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  M/D (M-flow {args.outer_layers}+{args.inner_layers} couplings): "
          f"manifold epoch {statistics.mean(by_phase['manifold']):.2f} s, "
          f"density epoch {statistics.mean(by_phase['density']):.2f} s, "
          f"mean {md_epoch:.2f} s/epoch ({ours_total:.1f} s in all)")
    print(f"  sbi NLE nsf ({layers} couplings): {nsf_epoch:.2f} s/epoch "
          f"({nsf_total:.1f} s in all)")
    print(f"  ratio M/D / NSF per epoch: {md_epoch / nsf_epoch:.2f} (target <= 1)")


if __name__ == "__main__":
    main()
