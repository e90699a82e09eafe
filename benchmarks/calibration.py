"""Benchmark: calibration of the NUTS posterior with sbi's own diagnostics, and its cost.

For a task, on one set of simulations:

1. an M-flow, with the library's posterior (``ManifoldNLE.build_posterior()``, defaults):
   on PolynomialSurface the one ``sbi-mflow demo`` trains (10⁴ simulations, the demo's
   architecture and M/D schedule), on lifted two moons (R^32, :mod:`benchmarks.tasks`) a
   sequential M/D M-flow (40 epochs, 30 density epochs); each trained once and cached;
2. sbi's NLE with its NSF (``likelihood_nn("nsf")``) on the same simulations, with sbi's
   ``MCMCPosterior`` (``slice_np_vectorized``, batched; sbi's default chains and warm-up,
   ``thin=1``).

Each posterior is checked with sbi 0.27's diagnostics on ``--observations`` (200) (θ, x)
pairs from the prior and the simulator (one trial each), ``--draws`` (1000) posterior draws
per observation:

* ``run_sbc`` with its defaults (batched sampling) → ``check_sbc`` (KS p-values of the rank
  histograms, rank C2ST) and ``sbc_rank_plot``;
* ``run_tarp`` on the same draws (replayed: sampling once serves both) → ``check_tarp``
  (ATC, KS p-value) and ``plot_tarp``.

Wall time: the batched run per method, and for ours also ``posterior.sample`` looped over the
first ``--loop-observations`` (5) observations, in the same run, to give the speed-up of the
batched path per observation. The sampler's per-observation R̂ and bulk ESS are recorded.

Results: one JSON per (task, method) under ``benchmarks/results/calibration/``, written as
each finishes (a rerun skips the finished ones; ``--force`` redoes them), figures beside
them, and ``<task>.json`` with both methods of a task.

Command line (one torch thread; the demo run trains for ~4 min)::

    python -m benchmarks.calibration                 # PolynomialSurface, both methods
    python -m benchmarks.calibration --task lifted_two_moons   # trains its M-flow (~20 min)
    python -m benchmarks.calibration --observations 20 --draws 200   # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

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
from simulators import PolynomialSurface

__all__ = ["LiftedTwoMoonsTask", "PolynomialSurfaceTask", "ReplayedDraws", "TASKS", "main",
           "section"]

OUT = RESULTS / "calibration"
#: Read as calibrated: every KS p-value of the SBC ranks at least KS_P_MIN, every rank C2ST
#: at most RANK_C2ST_MAX (0.5: uniform ranks) and |TARP ATC| at most ATC_MAX.
KS_P_MIN, RANK_C2ST_MAX, ATC_MAX = 0.05, 0.6, 0.05
#: Method names in the section's tables.
METHODS = {"mflow": "M-flow, NUTS (`sample_batched`)",
           "sbi_nle_nsf": "sbi NLE-NSF, `slice_np_vectorized` (batched)"}
CACHE = Path.home() / ".cache" / "sbi-mflow" / "calibration"


class ReplayedDraws:
    """Posterior draws already taken for a batch of observations, handed to sbi's
    diagnostics as their ``posterior.sample_batched`` (so SBC and TARP use the same draws)."""

    def __init__(self, xs: torch.Tensor, draws: torch.Tensor) -> None:
        self.xs, self.draws = xs, draws

    def sample_batched(self, sample_shape, x, show_progress_bars=False, **_):
        if not torch.equal(x, self.xs) or tuple(sample_shape) != (self.draws.shape[0],):
            raise ValueError("ReplayedDraws holds draws for other observations.")
        return self.draws


class PolynomialSurfaceTask:
    """The demo: PolynomialSurface, and the M-flow that ``sbi-mflow demo`` trains (run once,
    cached)."""

    name = "polynomial_surface"

    def __init__(self) -> None:
        self.simulator = PolynomialSurface()
        self.prior = self.simulator.prior

    def simulate(self, theta: torch.Tensor) -> torch.Tensor:
        return self.simulator(theta)

    def simulations(self, num: int, seed: int):
        """The demo's simulations (same seed and chunking as ``sbi-mflow demo``)."""
        from sbi_mflow.pipeline import simulate

        theta, x, _ = simulate(self.simulator, num, False, seed, progress=False)
        return theta, x

    def mflow(self, args) -> Path:
        out = CACHE / f"demo-seed{args.seed}"
        model = out / "model.pt"
        if not model.exists():
            subprocess.run([sys.executable, "-m", "sbi_mflow.cli", "demo", "--out", str(out),
                            "--force", "--seed", str(args.seed), "--quiet"], check=True)
        return model


class LiftedTwoMoonsTask:
    """sbibm's two moons lifted into R^32 (:func:`benchmarks.tasks.lifted_two_moons`), and an
    M-flow trained on it (sequential M/D, 40 epochs, 30 density epochs; cached)."""

    name = "lifted_two_moons"

    def __init__(self) -> None:
        from sbi.utils import BoxUniform

        from benchmarks.tasks import two_moons, two_moons_lift

        self.lift, self._two_moons = two_moons_lift(), two_moons
        self.prior = BoxUniform(-torch.ones(2), torch.ones(2))

    def simulate(self, theta: torch.Tensor) -> torch.Tensor:
        return self.lift(self._two_moons(theta))

    def simulations(self, num: int, seed: int):
        torch.manual_seed(seed)
        theta = self.prior.sample((num,))
        return theta, self.simulate(theta)

    def mflow(self, args) -> Path:
        model = CACHE / f"lifted-two-moons-n{args.simulations}-seed{args.seed}" / "model.pt"
        if not model.exists():
            theta, x = self.simulations(args.simulations, args.seed)
            torch.manual_seed(args.seed)
            inference = sbi_mflow.ManifoldNLE(
                self.prior, density_estimator=sbi_mflow.manifold_likelihood_nn("mflow", 2),
                show_progress_bars=False)
            estimator = inference.append_simulations(theta, x).train(
                schedule="sequential", max_num_epochs=40, density_epochs=30,
                training_batch_size=100)
            sbi_mflow.save(estimator, model)
        return model


TASKS = {task.name: task for task in (PolynomialSurfaceTask, LiftedTwoMoonsTask)}


def sbi_nsf_posterior(task, theta, x, args):
    """sbi's NLE-NSF trained on the simulations, and sbi's batched slice sampler on it."""
    from sbi.inference import NLE
    from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters

    torch.manual_seed(args.seed)
    inference = NLE(task.prior, density_estimator="nsf", show_progress_bars=False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        inference.append_simulations(theta, x).train(max_num_epochs=args.nsf_epochs)
    training = time.perf_counter() - start
    posterior = inference.build_posterior(posterior_parameters=MCMCPosteriorParameters(
        method="slice_np_vectorized", thin=1))
    return posterior, training


def calibrate(name: str, posterior, thetas, xs, args) -> dict:
    """run_sbc (timed, batched) and run_tarp on the same draws; sbi's checks and figures."""
    from sbi.analysis import plot_tarp, sbc_rank_plot
    from sbi.diagnostics import check_sbc, check_tarp, run_sbc, run_tarp

    torch.manual_seed(args.seed + 1)
    draws_seen: dict[str, torch.Tensor] = {}
    original = posterior.sample_batched

    def recording(sample_shape, x, show_progress_bars=False, **kwargs):
        draws = original(sample_shape, x=x, show_progress_bars=show_progress_bars, **kwargs)
        draws_seen["draws"] = draws
        return draws

    posterior.sample_batched = recording
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        ranks, dap = run_sbc(thetas, xs, posterior, num_posterior_samples=args.draws,
                             show_progress_bar=False)
        seconds = time.perf_counter() - start
    posterior.sample_batched = original
    fell_back = any("non-batched" in str(w.message).lower() for w in caught)
    sbc = check_sbc(ranks, thetas, dap, num_posterior_samples=args.draws)
    ecp, alpha = run_tarp(thetas, xs, ReplayedDraws(xs, draws_seen["draws"]),
                          num_posterior_samples=args.draws, show_progress_bar=False)
    atc, tarp_ks = check_tarp(ecp, alpha)
    args.out.mkdir(parents=True, exist_ok=True)
    figure, _ = sbc_rank_plot(ranks, args.draws, plot_type="hist", num_bins=20)
    figure.savefig(args.out / f"{name}_sbc.png", dpi=100)
    figure, _ = plot_tarp(ecp, alpha, title=f"TARP: {name}")
    figure.savefig(args.out / f"{name}_tarp.png", dpi=100)
    return {
        "sbc_seconds": seconds,
        "seconds_per_observation": seconds / len(xs),
        "batched": not fell_back,
        "ks_pvals": [float(v) for v in sbc["ks_pvals"]],
        "c2st_ranks": [float(v) for v in sbc["c2st_ranks"]],
        "c2st_dap": [float(v) for v in sbc["c2st_dap"]],
        "tarp_atc": float(atc),
        "tarp_ks_pval": float(tarp_ks),
    }


def run_mflow(task, thetas, xs, args) -> dict:
    start = time.perf_counter()
    model = args.model or task.mflow(args)
    training = time.perf_counter() - start
    estimator = sbi_mflow.load(model)
    theta, x = task.simulations(args.simulations, args.seed)
    inference = sbi_mflow.ManifoldNLE(task.prior, show_progress_bars=False)
    inference.append_simulations(theta, x)
    posterior = inference.build_posterior(density_estimator=estimator,
                                          sampling_device=args.sampling_device)
    result = calibrate(_name(task, "mflow", args), posterior, thetas, xs, args)
    result["sampling_device"] = str(posterior.sampling_device)
    result["training_seconds_if_not_cached"] = training
    convergence = posterior.convergence
    ess = sorted(s.min_ess_bulk for s in convergence)
    result.update({
        "median_ess_bulk": ess[len(ess) // 2],
        "ess_per_second_per_observation": ess[len(ess) // 2] / result["seconds_per_observation"],
        "max_rhat": max(s.max_rhat for s in convergence),
        "observations_rhat_above_1.01": sum(not s.max_rhat <= 1.01 for s in convergence),
        "min_ess_bulk": min(s.min_ess_bulk for s in convergence),
        "divergences": sum(s.num_divergences for s in convergence),
        "sampler": posterior.config.__dict__,
        "leapfrog_steps_per_transition": float(posterior.chain_result.info.num_steps.mean()),
    })
    loop, loop_ess = [], []
    for j in range(args.loop_observations):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            posterior.sample((args.draws,), x=xs[j], seed=j)
        loop.append(time.perf_counter() - start)
        loop_ess.append(posterior.convergence[0].min_ess_bulk / loop[-1])
    result["loop_seconds_per_observation"] = sum(loop) / len(loop)
    result["loop_ess_per_second"] = sum(loop_ess) / len(loop_ess)
    result["loop_speedup_per_observation"] = (
        result["loop_seconds_per_observation"] / result["seconds_per_observation"])
    return result


def run_nsf(task, thetas, xs, args) -> dict:
    theta, x = task.simulations(args.simulations, args.seed)
    posterior, training = sbi_nsf_posterior(task, theta, x, args)
    result = calibrate(_name(task, "sbi_nle_nsf", args), posterior, thetas, xs, args)
    result["training_seconds"] = training
    return result


def _name(task, method: str, args) -> str:
    """The result's file name: task, method, and the sampling device unless the default."""
    suffix = "" if args.sampling_device == "auto" else f"_{args.sampling_device}"
    return f"{task.name}_{method}{suffix}"


def _device(args) -> str:
    return "cuda" if args.sampling_device.startswith("cuda") else "cpu"


def _method(record: dict) -> str:
    """A method's name in the tables, with the sampling device where it is not the default."""
    device = record.get("settings", {}).get("sampling_device", "auto")
    name = METHODS.get(record["method"], record["method"])
    return name if device == "auto" else f"{name} on {device}"


def _calibrated(record: dict) -> str:
    passed = (min(record["ks_pvals"]) >= KS_P_MIN and max(record["c2st_ranks"]) <= RANK_C2ST_MAX
              and abs(record["tarp_atc"]) <= ATC_MAX)
    return "yes" if passed else "no"


def _task_section(task: str, records: list[dict]) -> str:
    """Tables and figures of one task: every method's checks, our sampler's diagnostics, the
    speed-up against sbi's slice sampler."""
    records.sort(key=lambda r: list(METHODS).index(r["method"]) if r["method"] in METHODS
                 else len(METHODS))
    settings = records[0].get("settings", {})
    checks = markdown_table(
        ["method", "min KS p (SBC ranks)", "max rank C2ST", "data-averaged C2ST",
         "TARP ATC", "TARP KS p", "calibrated", "`run_sbc` wall s", "s per observation"],
        [[_method(r), f"{min(r['ks_pvals']):.2f}",
          f"{max(r['c2st_ranks']):.3f}", f"{max(r['c2st_dap']):.3f}",
          f"{r['tarp_atc']:.3f}", f"{r['tarp_ks_pval']:.2f}", _calibrated(r),
          f"{r['sbc_seconds']:.0f}", f"{r['seconds_per_observation']:.2f}"] for r in records])
    text = (f"### {task} ({settings.get('observations', '?')} observations × "
            f"{settings.get('draws', '?')} draws, {settings.get('simulations', '?')} "
            f"simulations, seed {settings.get('seed', '?')})\n\n" + checks + "\n")
    for ours in (r for r in records if r["method"] == "mflow" and "max_rhat" in r):
        sampler = ours.get("sampler", {})
        text += (
            f"\n{_method(ours)}: {sampler.get('batch_num_chains', '?')} chains per observation, "
            f"{sampler.get('warmup_steps', '?')} warm-up steps, all chains of all "
            f"observations in one NUTS state; `posterior.sample` looped over the first "
            f"{settings.get('loop_observations', '?')} observations in the same run for "
            "comparison.\n\n"
            + markdown_table(
                ["R̂ max", "observations with R̂ > 1.01", "bulk ESS median / min",
                 "divergences", "leapfrog steps / transition", "batched s per observation",
                 "looped s per observation", "bulk ESS/s batched / looped"],
                [[f"{ours['max_rhat']:.3f}",
                  f"{ours['observations_rhat_above_1.01']} of "
                  f"{settings.get('observations', '?')}",
                  f"{ours['median_ess_bulk']:.0f} / {ours['min_ess_bulk']:.0f}",
                  ours.get("divergences", "–"), f"{ours['leapfrog_steps_per_transition']:.0f}",
                  f"{ours['seconds_per_observation']:.2f}",
                  f"{ours['loop_seconds_per_observation']:.1f}",
                  f"{ours['ess_per_second_per_observation']:.0f} / "
                  f"{ours['loop_ess_per_second']:.0f}"]])
            + f"\n\nThe batched path is {ours['loop_speedup_per_observation']:.0f}× faster per "
            "observation than the loop.\n")
    combined = load_result(f"calibration/{task}")
    if combined and "speedup_vs_sbi_slice" in combined:
        text += (f"\nPer observation, our batched sampler is "
                 f"**{combined['speedup_vs_sbi_slice']:.1f}×** as fast as sbi's batched slice "
                 "sampler.\n")
    figures = [f"![{kind}: {r['name']}](../benchmarks/results/calibration/{figure})"
               for r in records for kind, suffix in (("SBC ranks", "sbc"), ("TARP", "tarp"))
               if (OUT / (figure := f"{r['name']}_{suffix}.png")).exists()]
    if figures:
        text += "\n" + "\n".join(figures) + "\n"
    machines = sorted({describe_machine(r) for r in records})
    return text + f"\nMachine: {'; '.join(machines)}.\n"


def section() -> str:
    """The "Calibration with sbi's diagnostics" section of docs/benchmarks.md from the
    per-method JSON under ``benchmarks/results/calibration/`` ("" when none is committed)."""
    by_task: dict[str, list[dict]] = {}
    for path in sorted(OUT.glob("*_*.json")):
        record = json.loads(path.read_text())
        if "ks_pvals" in record:
            by_task.setdefault(record["task"], []).append({**record, "name": path.stem})
    if not by_task:
        return ""
    return (
        "## Calibration with sbi's diagnostics (`python -m benchmarks.calibration --task "
        "TASK`)\n\n"
        "sbi's `run_sbc` (its defaults: batched sampling) and `run_tarp` on the same posterior "
        "draws, for (θ, x) pairs drawn from the prior and the simulator (one trial each). "
        "Ours: the M-flow (on PolynomialSurface the one `sbi-mflow demo` trains) with "
        "`build_posterior()`'s defaults; sbi's: NLE with its NSF trained on the same "
        "simulations, and sbi's `slice_np_vectorized` MCMC, batched. Calibrated ranks give KS "
        "p-values that are not small and a rank C2ST near 0.5; the data-averaged C2ST "
        "compares the average posterior with the prior (0.5: indistinguishable); a "
        "calibrated posterior has TARP ATC near 0. \"calibrated\" reads: KS p ≥ "
        f"{KS_P_MIN:g}, rank C2ST ≤ {RANK_C2ST_MAX:g} and |ATC| ≤ {ATC_MAX:g}. Wall times are "
        "of the whole `run_sbc` call.\n\n"
        + "\n".join(_task_section(task, records) for task, records in by_task.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=list(TASKS), default="polynomial_surface")
    parser.add_argument("--observations", type=int, default=200)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--nsf-epochs", type=int, default=200)
    parser.add_argument("--loop-observations", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["mflow", "sbi_nle_nsf"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--model", type=Path, help="a saved M-flow (default: the demo's)")
    parser.add_argument("--sampling-device", default="auto",
                        help="our posterior's sampling_device (results named after it)")
    parser.add_argument("--out", type=Path, default=OUT, help="results folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = TASKS[args.task]()
    torch.manual_seed(args.seed + 1000)
    thetas = task.prior.sample((args.observations,))
    xs = task.simulate(thetas)
    runners = {"mflow": run_mflow, "sbi_nle_nsf": run_nsf}
    results = {}
    for method in args.methods:
        name = _name(task, method, args)
        path = args.out / f"{name}.json"
        if path.exists() and not args.force:
            results[method] = json.loads(path.read_text())
            print(f"{name}: cached")
            continue
        print(f"{name}: running")
        result = runners[method](task, thetas, xs, args)
        record = {"commit": git_commit(), "machine": machine(_device(args)),
                  "task": task.name, "method": method, "settings": vars(args), **result}
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        results[method] = record
        print(json.dumps({k: v for k, v in result.items() if k != "sampler"}, indent=1))
    if {"mflow", "sbi_nle_nsf"} <= set(results) and args.out == OUT:
        ours, theirs = results["mflow"], results["sbi_nle_nsf"]
        speedup = theirs["seconds_per_observation"] / ours["seconds_per_observation"]
        print(f"batched speed-up per observation over sbi's slice sampler: {speedup:.1f}x")
        write_result(f"calibration/{task.name}", {"task": task.name, "results": results,
                                     "speedup_vs_sbi_slice": speedup,
                                     "settings": vars(args)})


if __name__ == "__main__":
    main()
