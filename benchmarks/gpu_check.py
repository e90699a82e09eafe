"""Training throughput on CUDA against the same machine's CPU, through ``ManifoldNLE``.

ParticleDecay (d = 40, n = 10), the issue's configuration: M-flow with 10 outer + 5 inner
couplings, hidden 128, sequential M/D. For each device and batch size, trains
``--epochs`` manifold and density epochs (one candidate initialisation, so every epoch is
a training epoch) and reports training samples per second of the manifold and density
phases, from the median epoch after the first (the first includes ``torch.compile`` on
CUDA); epochs include their validation pass. CPU runs use all cores. Exits with a message
when no CUDA device is present. Writes ``benchmarks/results/gpu_check.json``.

Run: ``python -m benchmarks.gpu_check [--simulations 10000] [--batches 128 1024]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

import sbi_mflow
from benchmarks._results import machine, write_result
from sbi_mflow.tracking import NullTracker
from simulators import ParticleDecay


def throughput(device: str, theta, x, simulator, epochs: int, batch: int) -> dict:
    build = sbi_mflow.manifold_likelihood_nn("mflow", simulator.manifold_dim, outer_layers=10,
                                             inner_layers=5, hidden_features=128)
    inference = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=build, device=device,
                                      show_progress_bars=False, tracker=NullTracker())
    inference.append_simulations(theta, x)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        inference.train(max_num_epochs=2 * epochs, training_batch_size=batch,
                        stop_after_epochs=10**6, manifold_candidates=1)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    rows = len(inference.train_indices)
    result = {"device": device, "batch": batch, "total_seconds": total}
    for phase in ("manifold", "density"):
        times = [e["seconds"] for e in inference.summary["phases"] if e["phase"] == phase]
        steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
        result[f"{phase}_first_epoch_s"] = times[0]
        result[f"{phase}_samples_per_s"] = rows / steady
        result[f"{phase}_ms_per_step"] = 1e3 * steady / max(rows // batch, 1)
    print(f"  {device:>5} batch {batch:>5}: manifold {result['manifold_samples_per_s']:9.0f} "
          f"samples/s ({result['manifold_ms_per_step']:.1f} ms/step), density "
          f"{result['density_samples_per_s']:9.0f} samples/s; first epochs "
          f"{times[0]:.1f} s; {total:.1f} s in all", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per phase")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        sys.exit(0)
    torch.manual_seed(0)
    simulator = ParticleDecay()
    theta = simulator.prior.sample((args.simulations,))
    x = simulator(theta)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CPU threads "
          f"{args.cpu_threads}")
    rows = []
    for batch in args.batches:
        torch.set_num_threads(args.cpu_threads)
        gpu = throughput("cuda", theta, x, simulator, args.epochs, batch)
        cpu = throughput("cpu", theta, x, simulator, args.epochs, batch)
        for phase in ("manifold", "density"):
            ratio = gpu[f"{phase}_samples_per_s"] / cpu[f"{phase}_samples_per_s"]
            print(f"  batch {batch}: {phase} GPU / CPU samples/s = {ratio:.1f}x")
        rows += [gpu, cpu]
    path = write_result("gpu_check", {"settings": vars(args), "machine": machine("cuda"),
                                      "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
