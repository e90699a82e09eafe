"""One short CUDA check: M/D training on ParticleDecay, samples/second on GPU and CPU.

Trains the same M-flow for a few epochs per phase on each device and prints throughput
(training samples processed per second) and the ratio. Exits with a message when no
CUDA device is present. Run: ``python benchmarks/gpu_check.py [--simulations 20000]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from sbi.utils import BoxUniform

import sbi_mflow
from sbi_mflow.tracking import NullTracker
from simulators import ParticleDecay


def throughput(device: str, theta, x, simulator, epochs: int, batch: int) -> float:
    prior = BoxUniform(simulator.prior.base_dist.low.to(device),
                       simulator.prior.base_dist.high.to(device), device=device)
    build = sbi_mflow.manifold_likelihood_nn("mflow", simulator.manifold_dim, outer_layers=10,
                                             inner_layers=5, hidden_features=128)
    inference = sbi_mflow.ManifoldNLE(prior, density_estimator=build, device=device,
                                      show_progress_bars=False, tracker=NullTracker())
    inference.append_simulations(theta, x)
    start = time.time()
    estimator = inference.train(max_num_epochs=2 * epochs, training_batch_size=batch,
                                stop_after_epochs=10**6)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.time() - start
    with torch.no_grad():
        error = estimator.reconstruction_error(x[:1000].to(device)).mean().item()
    print(f"  {device}: {seconds:.1f} s for {2 * epochs} epochs, reconstruction error "
          f"{error:.3g}")
    return 2 * epochs * len(inference.train_indices) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        sys.exit(0)
    torch.manual_seed(0)
    simulator = ParticleDecay()
    theta = simulator.prior.sample((args.simulations,))
    x = simulator(theta)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    gpu = throughput("cuda", theta, x, simulator, args.epochs, args.batch)
    cpu = throughput("cpu", theta, x, simulator, args.epochs, args.batch)
    print(f"training samples/second: cuda {gpu:.0f}, cpu {cpu:.0f}, ratio {gpu / cpu:.1f}x")


if __name__ == "__main__":
    main()
