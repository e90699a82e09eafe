"""Benchmark: the whole demo, ``sbi-mflow demo``, timed, with what it reports.

``sbi-mflow demo`` simulates ``PolynomialSurface``, trains an M-flow (M/D schedule), samples
the NUTS posterior of iid trials at the simulator's default θ and compares it with the
simulator's reference posterior. This script runs it in a temporary folder and writes its
``summary.json`` (posterior MMD² and C2ST, held-out reconstruction error, the model samples'
distance to the true surface, R̂, bulk ESS, divergences, the demo's own clock), the wall time
of the command and the training configuration, with commit and machine, to
``benchmarks/results/demo.json``; with ``--seeds``, one demo per seed
(``sbi-mflow demo --seed k``) to ``benchmarks/results/demo_seeds.json``. Options this script
does not know go to ``sbi-mflow demo``. Command lines (one torch thread, as the demo; about
four minutes per demo on two cores)::

    python -m benchmarks.demo                    # benchmarks/results/demo.json
    python -m benchmarks.demo --seeds 0 1 2      # benchmarks/results/demo_seeds.json
    python -m benchmarks.demo --report           # its section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._results import (
    describe_machine,
    load_result,
    machine,
    markdown_table,
    write_result,
)

__all__ = ["main", "run_demo", "section"]


def run_demo(seed: int | None, threads: int, demo_args: list[str]) -> dict[str, Any]:
    """Run ``sbi-mflow demo`` once in a temporary folder; its command line, wall time,
    training configuration and summary."""
    options = ([] if seed is None else ["--seed", str(seed)]) + ["--threads", str(threads),
                                                                "--quiet", *demo_args]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sbi_mflow.cli", "demo", "--out", folder,
                        "--force", *options], check=True)
        wall = time.perf_counter() - start
        summary = json.loads((Path(folder) / "summary.json").read_text())
        run = json.loads((Path(folder) / "run.json").read_text())
    return {"command": shlex.join(["sbi-mflow", "demo", *options]), "seed": seed,
            "wall_seconds": wall, "train_config": run.get("train_config"), "summary": summary}


def _command(record: dict[str, Any]) -> str:
    """The command a record ran, without the notes older records appended in brackets."""
    return str(record.get("command", "sbi-mflow demo")).split(" (")[0]


def _quality(summary: dict[str, Any]) -> list[str]:
    return [f"{summary['posterior_mmd_squared']:.4f}", f"{summary['posterior_c2st']:.3f}",
            f"{summary['r_hat_max']:.3f}", f"{summary['ess_bulk_min']:.0f}",
            str(summary["divergences"]), f"{summary['reconstruction_error']:.4f}",
            f"{summary['sample_distance_to_manifold']:.4f}"]


QUALITY = ["posterior MMD²", "posterior C2ST", "R̂ max", "bulk ESS min", "divergences",
           "held-out reconstruction error", "model samples' distance to the surface"]


def _machine(record: dict[str, Any]) -> str:
    note = record.get("machine", {}).get("note")
    return f"Machine: {describe_machine(record)}" + (f" ({note})" if note else "") + ".\n"


def section() -> str:
    """The "Demo" section of docs/benchmarks.md from ``benchmarks/results/demo.json`` (the
    latest full demo) and ``demo_seeds.json`` (a sweep over the demo's seed); "" when
    neither is committed."""
    latest, seeds = load_result("demo"), load_result("demo_seeds")
    if latest is None and seeds is None:
        return ""
    text = (
        "## The demo, `sbi-mflow demo` (`python -m benchmarks.demo`)\n\n"
        "`sbi-mflow demo` with its defaults: it simulates `PolynomialSurface`, trains an "
        "M-flow, samples the NUTS posterior of iid trials at the simulator's default θ and "
        "compares it with the simulator's reference posterior: MMD² (0: the same "
        "distribution) and C2ST (0.5: indistinguishable). R̂ is the largest over θ, bulk ESS "
        "the smallest; the reconstruction error is the chart's on held-out simulations, and "
        "the distance is that of the model's samples from the true surface. The demo's own "
        "clock splits its time into training and sampling (NUTS).\n")
    if latest is not None:
        summary, command = latest["summary"], _command(latest)
        seconds = summary.get("seconds", {})
        setup = " (includes setting up `.venv`)" if "demo.sh" in command else ""
        text += (
            f"\nThe latest run: {summary['num_trials']} trials at θ = "
            f"{', '.join(f'{v:g}' for v in summary['true_theta'])}; `{command}` took "
            f"{latest['wall_seconds']:.0f} s in all{setup}, of which the demo's clock read "
            f"{seconds.get('total', float('nan')):.0f} s (training "
            f"{seconds.get('training', float('nan')):.0f} s, sampling "
            f"{seconds.get('sampling', float('nan')):.0f} s).\n\n"
            + markdown_table(QUALITY, [_quality(summary)]) + "\n\n" + _machine(latest))
    if seeds is not None and seeds.get("runs"):
        runs = sorted(seeds["runs"], key=lambda run: run["seed"])
        rows = [[run["seed"], *_quality(run["summary"]),
                 f"{run['summary']['seconds']['training']:.0f}",
                 f"{run['summary']['seconds']['sampling']:.0f}"] for run in runs]
        text += (
            f"\nThe demo over its seed (`sbi-mflow demo --seed k`, k = "
            f"{', '.join(str(run['seed']) for run in runs)}): the seed sets the simulations, "
            "the observations and the random state of training and sampling, so the spread "
            "is that of the whole pipeline at the demo's budget.\n\n"
            + markdown_table(["seed", *QUALITY, "training s", "sampling s"], rows) + "\n\n"
            + _machine(seeds))
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="one demo per seed, to demo_seeds.json (default: one demo at "
                             "the demo's seed, to demo.json)")
    parser.add_argument("--threads", type=int, default=1, help="the demo's torch threads")
    parser.add_argument("--report", action="store_true",
                        help="print the Markdown section from the committed JSON")
    args, demo_args = parser.parse_known_args(argv)
    if args.report:
        print(section(), end="")
        return
    info = {**machine(), "torch_threads": args.threads}
    if args.seeds:
        runs = []
        for seed in args.seeds:
            runs.append(run_demo(seed, args.threads, demo_args))
            path = write_result("demo_seeds", {"machine": info, "runs": runs})
    else:
        path = write_result("demo", {"machine": info, **run_demo(None, args.threads, demo_args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
