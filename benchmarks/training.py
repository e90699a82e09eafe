"""Whole-run training time: sequential M/D against sbi's NLE with an NSF, on the same data.

Data: ``ParticleDecay`` (d = 40, n = 10), 10⁴ simulations by default. Our M-flow has
``outer + inner`` coupling layers and trains with the library's defaults (sequential M/D,
E/2 manifold epochs after choosing among candidate initialisations) except for the density
phase, pinned to E/2 epochs on cached encodings so that both runs have E epochs; sbi's
NSF (``likelihood_nn("nsf")``) gets the same total number of coupling layers, hidden
features and bins, the same batch size and validation fraction, and E epochs. Both run in
this process, one after the other, with the same torch threads; the times include
validation passes and everything else ``train`` does. Prints the ratio of the whole runs
(target: ≤ ``RATIO_TARGET`` on one CPU thread at batch 100) and writes JSON to
``benchmarks/results/training_<device>.json`` (options off the defaults add a tag).

``--spline-stand-in`` replaces the spline of our couplings by a one-operation elementwise map
(``benchmarks/spline_cost.py``): a bound on what any faster spline could give.

Run: ``python -m benchmarks.training [--epochs 20] [--device cuda] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import torch
from sbi.inference import NLE
from sbi.neural_nets import likelihood_nn

import sbi_mflow
from benchmarks._results import (
    describe_machine,
    load_result,
    machine,
    markdown_table,
    write_result,
)
from sbi_mflow.priors import prior_on_device
from sbi_mflow.tracking import NullTracker
from sbi_mflow.training import TrainConfig
from simulators import ParticleDecay

__all__ = ["RATIO_TARGET", "section"]

RATIO_TARGET = 0.25  # whole M/D run over sbi's NSF run, one CPU thread, batch 100
NUM_BINS = 8
VALIDATION_FRACTION = 0.1
RESULT = "training_cpu"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _parser() -> argparse.ArgumentParser:
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
    return parser


def _command(settings: dict[str, Any]) -> str:
    """The command line that reproduces a run with these settings (non-default options)."""
    options = []
    for key, default in vars(_parser().parse_args([])).items():
        value = settings.get(key, default)
        if value == default:
            continue
        flag = f"--{key.replace('_', '-')}"
        options.append(flag if isinstance(value, bool) else f"{flag} {value}")
    return " ".join(["python -m benchmarks.training", *options])


def section() -> str:
    """Markdown section from ``benchmarks/results/training_cpu.json`` ("" when missing)."""
    record = load_result(RESULT)
    if record is None:
        return ""
    settings = record.get("settings", {})
    epochs = settings.get("epochs")
    layers = settings.get("outer_layers", 0) + settings.get("inner_layers", 0)
    threads = settings.get("threads")
    seconds = record.get("md_epoch_seconds", {})
    manifold, density = seconds.get("manifold", []), seconds.get("density", [])
    ratio = record.get("ratio")
    nsf = record.get("nsf_seconds")
    epochs_md = " + ".join(f"{len(values)} {phase} × {statistics.mean(values):.2f}"
                           for phase, values in (("manifold", manifold), ("density", density))
                           if values)
    rows = [[f"M/D, M-flow with {settings.get('outer_layers')} outer + "
             f"{settings.get('inner_layers')} inner couplings"
             + (" (spline replaced by an elementwise map)" if settings.get("spline_stand_in")
                else ""),
             f"{record['md_seconds']:.1f}", epochs_md,
             f"{ratio:.3f}" if ratio is not None else ""]]
    if nsf is not None:
        rows.append([f"sbi's NLE, `likelihood_nn(\"nsf\", num_transforms={layers})`",
                     f"{nsf:.1f}", f"{epochs} × {record['nsf_epoch_seconds']:.2f}", "1"])
    text = (
        f"## Whole training run against sbi's NSF (`{_command(settings)}`)\n\n"
        f"ParticleDecay (d = {ParticleDecay.data_dim}, n = {ParticleDecay.manifold_dim}), "
        f"{settings.get('simulations'):,} simulations, batch {settings.get('batch')}, "
        f"{threads} torch thread{'' if threads == 1 else 's'}, E = {epochs} epochs for both, "
        f"measured one after the other in one process. Ours trains with the sequential M/D "
        f"schedule, {settings.get('candidates')} candidate initialisations of the chart and "
        f"{settings.get('retries')} restarts, the trainer's other settings at their defaults: "
        f"the candidates' "
        f"probe epochs, then E/2 manifold epochs, then E/2 density epochs on cached "
        f"encodings. sbi's NSF has as many coupling layers ({layers}), the same hidden "
        f"features ({settings.get('hidden')}), bins ({NUM_BINS}), batch size and validation "
        f"fraction ({VALIDATION_FRACTION}). Times are whole `train` calls in seconds, "
        f"validation passes included; the last column divides by sbi's time.\n\n"
        + markdown_table(["run", "s in all", "epochs × mean s per epoch", "ratio to sbi's NSF"],
                         rows)
        + "\n\n")
    if ratio is not None:
        text += (f"Ratio {ratio:.3f} against a target of ≤ {RATIO_TARGET}: "
                 f"{'met' if ratio <= RATIO_TARGET else 'missed'}.")
    check = record.get("manifold_check") or {}
    if check.get("reconstruction") is not None:
        text += (f" After the manifold phase the chart reconstructs held-out data to "
                 f"{check['reconstruction']:.3g} per standardised coordinate, "
                 f"{check['ratio']:.0%} of what the best linear {ParticleDecay.manifold_dim}-"
                 f"dimensional chart leaves ({check['linear_baseline']:.3g}); the stall check "
                 f"{'fired and warned' if check.get('stalled') else 'passed'}.")
    load = record.get("machine", {}).get("load_average")
    return (text.rstrip() + "\n\n" + f"Machine: {describe_machine(record)}"
            + (f"; load average {load[0]:.1f} when it ran" if load else "") + ".\n")


def main() -> None:
    parser = _parser()
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
    common = dict(training_batch_size=args.batch, validation_fraction=VALIDATION_FRACTION,
                  stop_after_epochs=10**6)

    build = sbi_mflow.manifold_likelihood_nn(
        "mflow", simulator.manifold_dim, outer_layers=args.outer_layers,
        inner_layers=args.inner_layers, hidden_features=args.hidden, num_bins=NUM_BINS,
    )
    ours = sbi_mflow.ManifoldNLE(prior, density_estimator=build, device=args.device,
                                 show_progress_bars=False, tracker=NullTracker())
    ours.append_simulations(theta, x)
    _sync(args.device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours.train(schedule="sequential", max_num_epochs=args.epochs,
                   density_epochs=max(1, args.epochs // 2), compile=compile_step,
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
                                  num_bins=NUM_BINS)
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
        print(f"  ratio of the whole runs M/D / NSF: {ratio:.3f} (target <= {RATIO_TARGET} on CPU)")
    defaults = (TrainConfig.manifold_candidates, TrainConfig.manifold_retries)
    chosen = (args.candidates, args.retries)
    tag = "" if chosen == defaults else f"_c{args.candidates}r{args.retries}"
    tag += "_spline_stand_in" if args.spline_stand_in else ""
    path = write_result(f"training_{args.device.split(':')[0]}{tag}", {
        "settings": {**vars(args), "version": sbi_mflow.__version__},
        "machine": machine(args.device),
        "md_seconds": ours_total, "md_epoch_seconds": seconds,
        "manifold_check": check, "manifold_attempts": ours.summary.get("manifold_attempts"),
        "nsf_seconds": nsf_total, "nsf_epoch_seconds": nsf_epoch,
        "ratio": ratio,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
