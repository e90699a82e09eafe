"""Benchmark: sbi-mflow against what a user of sbi would pick instead, on the same data.

Tasks (:mod:`benchmarks.tasks`) × methods (:mod:`benchmarks.methods`) × simulation budgets
× trial counts T × seeds. Every method of a (task, budget, seed) trains on the same
simulations (drawn with that seed) and is scored on the same observations 1–5 of each T by
C2ST (sbi's MLP classifier, 5 folds; 0.5 = indistinguishable) of ``--draws`` posterior draws
against as many reference draws. A trained model serves every T of its task.

Each (task, method, budget, seed) writes
``benchmarks/results/versus_sbi/<task>/<method>-n<budget>-seed<seed>.json`` as soon as it is
done (training and sampling seconds, C2ST per T and observation, the machine, the commit and
sbi-mflow's version); a rerun skips what is there (``--force`` redoes it), so long runs
resume and can be split across processes (``--tasks``, ``--methods``, ``--budgets``,
``--seeds``); a stale result (of a version before its method's last change) is redone
too. Until a run is complete its trained model and the T already scored are kept under
``--cache`` (``benchmarks/.cache/versus_sbi``, git-ignored), with the draws of each
observation already sampled where a method samples them one at a time (sbi's, for T > 1),
and a stopped run of the same ``methods.py`` (for our methods, also the same sbi-mflow
version) resumes from them (``--force`` discards them; :mod:`benchmarks.run_cache`). For
sbi's methods the same progress, without the model, goes to ``--ledger``
(``benchmarks/unfinished/versus_sbi``, committed): on another machine the run trains its
model anew and goes on from there if the parameters are bit for bit the same
(:mod:`benchmarks.run_ledger`).
``--dry-run`` lists the runs a command would make, each with the time it should take by
the mean of its other seeds' runs (less the sampling its ledger holds); ``--report``
prints the table from the JSON (the tables, the verdicts and the figure:
:mod:`benchmarks.versus_sbi_report`).

Memory: sbi's NLE at T > 1 starts each of its 20 chains from 10⁴ prior candidates scored
on all T trials at once (sbi's default ``init_strategy="resample"``); on lifted
gaussian_linear at T = 20 that peaks at 19.4 GB resident. Under glibc's default allocator
the freed blocks stay in the heap and the peak grows by about half a GB per chain, past a
24 GB machine within two observations. ``MALLOC_MMAP_THRESHOLD_=4194304
MALLOC_TRIM_THRESHOLD_=4194304`` (the setting measured) return them to the system and
hold the peak at 19.4 GB.

Commands (one torch thread)::

    export MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_TRIM_THRESHOLD_=4194304
    python -m benchmarks.versus_sbi                          # 10^3 and 10^4, seeds 0 and 1
    python -m benchmarks.versus_sbi --budgets 1000 --tasks polynomial_surface
    python -m benchmarks.versus_sbi --full                   # adds 10^5
    python -m benchmarks.versus_sbi --report
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy
import torch
from torch import Tensor

import sbi_mflow
from benchmarks._results import git_commit, machine
from benchmarks.methods import METHODS, NEEDS_CHART, NEEDS_LIKELIHOOD, ON_REQUEST, Fitted
from benchmarks.run_cache import cache_path, load_unfinished, save_unfinished
from benchmarks.run_ledger import ledger_path, load_ledger, save_ledger
from benchmarks.tasks import NUM_OBSERVATIONS, TASKS
from benchmarks.versus_sbi_report import (
    CURRENT_SINCE,
    OUT,
    is_stale,
    load_results,
    result_path,
    table,
)

__all__ = ["CACHE", "LEDGER", "SamplingFailed", "main", "run_one"]

#: Unfinished runs: the trained model and the trials sampled so far (git-ignored).
CACHE = Path(__file__).parent / ".cache" / "versus_sbi"
#: Unfinished runs of sbi's methods: their draws so far, as JSON, committed so that another
#: session goes on with them (:mod:`benchmarks.run_ledger`).
LEDGER = Path(__file__).parent / "unfinished" / "versus_sbi"


class SamplingFailed(Exception):
    """A method's sampler raised (its ``__cause__``): a result to record, unlike a failure
    to keep the cache, which stops the run."""


def _draw(fitted: Fitted, draws: int, xs: Tensor, seed: int, progress: dict | None,
          keep: Callable[[dict], None]) -> tuple[Tensor, float]:
    """Posterior draws (draws, B, p) for the observations ``xs`` (B, T, D), and the seconds
    they took; :class:`SamplingFailed` where the sampler raises.

    The generators (torch's and NumPy's: sbi's slice samplers draw from the latter) are
    seeded with ``seed`` first. A sampler that takes observations one at a time (T > 1) is
    called per observation, and after each, ``keep`` gets the ``progress``: the draws so
    far, their seconds and the generators' states. Given such a ``progress``, the run goes
    on from the next observation with the generators where they were, so a stopped run
    ends with the draws it would have made without stopping.
    """
    def sample(observations: Tensor) -> Tensor:
        try:
            return fitted.sample(draws, observations)
        except Exception as error:
            raise SamplingFailed from error

    if progress is None:
        torch.manual_seed(seed)
        numpy.random.seed(seed)
    else:
        torch.set_rng_state(progress["torch_rng"])
        numpy.random.set_state(progress["numpy_rng"])
    if not (fitted.one_observation_at_a_time and xs.shape[1] > 1):
        start = time.perf_counter()
        return sample(xs), time.perf_counter() - start
    progress = progress or {"trials": xs.shape[1], "draws": [], "seconds": 0.0}
    for j in range(len(progress["draws"]), xs.shape[0]):
        start = time.perf_counter()
        progress["draws"].append(sample(xs[j:j + 1])[:, 0])
        progress["seconds"] += time.perf_counter() - start
        progress.update(torch_rng=torch.get_rng_state(), numpy_rng=numpy.random.get_state())
        keep(progress)
    return torch.stack(progress["draws"], dim=1), progress["seconds"]


def _resume_or_train(task, method: str, budget: int, seed: int, path: Path | None,
                     written: Path | None,
                     keep: Callable[[Fitted, dict, dict | None], None],
                     ) -> tuple[Fitted, dict, dict | None]:
    """The fitted model, the result so far and the unfinished T's progress: from the pickled
    cache at ``path`` if there is one, else trained anew and, where the ledger at ``written``
    was written by a model with the same parameters, with that ledger's progress."""
    unfinished = load_unfinished(path, uses_sbi_mflow=method in CURRENT_SINCE)
    if unfinished is None:
        torch.manual_seed(seed)
        theta = task.prior.sample((budget,)) if budget else None
        x = task.simulate(theta) if budget else None
        fitted = METHODS[method](task, theta, x, seed)
        result = {"task": task.name, "method": method, "budget": budget, "seed": seed,
                  "train_seconds": fitted.train_seconds, "info": fitted.info, "trials": {}}
        progress = None
        if (found := load_ledger(written, fitted)) is not None:
            result, progress = found
            fitted.info.update(result["info"])  # the object the model's sampler writes to
            result["info"] = fitted.info
            print(f"  {task.name} {method} n={budget} seed {seed}: retrained to the same "
                  f"parameters; going on from {written}", flush=True)
        elif written is not None and written.exists():
            print(f"  {task.name} {method} n={budget} seed {seed}: the retrained model "
                  f"differs from the one of {written}; starting over", flush=True)
        keep(fitted, result, progress)
    else:
        fitted, result, progress = (unfinished["fitted"], unfinished["result"],
                                    unfinished.get("progress"))
        print(f"  {task.name} {method} n={budget} seed {seed}: trained model loaded from "
              f"{path}" + (f" with T = {', '.join(result['trials'])} done"
                           if result["trials"] else "")
              + (f", {len(progress['draws'])} observations of T = {progress['trials']}"
                 if progress else ""), flush=True)
    return fitted, result, progress


def run_one(task, method: str, budget: int, seed: int, draws: int,
            cache: Path | None = None, ledger: Path | None = None) -> dict:
    """Train ``method`` on ``budget`` simulations of ``task`` (seed ``seed``) and score its
    posterior on observations 1–5 for every T of the task (budget 0: a method that uses no
    simulations).

    With ``cache`` (a folder), the trained model, each T's scores and, for a sampler that
    takes observations one at a time, each observation's draws are kept there as they are
    done, and a run of the same code that was stopped resumes from them (no retraining, no
    T or observation sampled twice; sbi's methods, which do not use sbi-mflow, also under
    another sbi-mflow version); the cache file goes once the run is complete. With
    ``ledger`` (a folder), the same progress, without the model, is also written as JSON there
    (:mod:`benchmarks.run_ledger`), for a run that another machine goes on with: it trains
    the model anew and resumes only if the parameters come out the same.
    """
    from sbi_mflow.metrics import c2st

    path = cache_path(cache, task.name, method, budget, seed) if cache else None
    written = ledger_path(ledger, task.name, method, budget, seed) if ledger else None

    def keep(fitted: Fitted, result: dict, progress: dict | None = None) -> None:
        save_unfinished(path, fitted, result, progress)
        save_ledger(written, fitted, result, progress)

    fitted, result, progress = _resume_or_train(task, method, budget, seed, path, written, keep)
    for trials in task.trials:
        if str(trials) in result["trials"]:
            continue
        ks = range(1, NUM_OBSERVATIONS + 1)
        xs = torch.stack([task.observe(k, trials) for k in ks])  # (B, T, D)
        resumed = progress if progress and progress["trials"] == trials else None
        start = time.perf_counter()
        try:
            samples, seconds = _draw(
                fitted, draws, xs, seed, resumed,
                keep=lambda progress: keep(fitted, result, progress))
        except SamplingFailed as failure:  # the method's own failure is a result: record it
            seconds, error = time.perf_counter() - start, failure.__cause__
            first_line = (str(error).splitlines() or [""])[0]
            message = f"{type(error).__name__}: {first_line[:200]}"
            result["trials"][str(trials)] = {"error": message, "sample_seconds": seconds}
            print(f"  {task.name} {method} n={budget} seed {seed} T={trials}: failed after "
                  f"{seconds:.0f} s ({message})", flush=True)
            keep(fitted, result)
            continue
        scores = [c2st(samples[:, j].float(), task.reference(k, trials, draws),
                       classifier="mlp", seed=seed) for j, k in enumerate(ks)]
        result["trials"][str(trials)] = {"c2st": scores, "sample_seconds": seconds}
        print(f"  {task.name} {method} n={budget} seed {seed} T={trials}: C2ST "
              + " ".join(f"{s:.3f}" for s in scores) + f" (sampling {seconds:.0f} s)",
              flush=True)
        keep(fitted, result)
    return result


def _needs_run(path: Path) -> bool:
    """No result at ``path`` yet, or a stale one (of a version before its method's last
    change)."""
    return not path.exists() or is_stale(json.loads(path.read_text()))


def _run_seconds(record: dict) -> float:
    """A run's training and sampling seconds (all T's, and the observations of an unfinished
    T that its ledger ``progress`` holds)."""
    result, progress = record.get("result", record), record.get("progress")
    return (result["train_seconds"]
            + sum(trial["sample_seconds"] for trial in result["trials"].values())
            + (progress["seconds"] if progress else 0.0))


def expected_seconds(out: Path, task: str, method: str, budget: int, seed: int,
                     written: Path | None = None) -> tuple[float, list[int]] | None:
    """Seconds the run still takes, by the other seeds' runs of the same task, method and
    budget in ``out`` (their mean time), less the sampling its ledger at ``written`` holds
    (a run that resumes from its ledger trains again); ``None`` where no other seed has been
    run."""
    others = {}
    for path in sorted((out / task).glob(f"{method}-n{budget}-seed*.json")):
        other = int(path.stem.rsplit("seed", 1)[1])
        if other != seed:
            others[other] = _run_seconds(json.loads(path.read_text()))
    if not others:
        return None
    expected = sum(others.values()) / len(others)
    if written is not None and written.exists():
        record = json.loads(written.read_text())
        expected -= _run_seconds(record) - record["result"]["train_seconds"]
    return max(expected, 0.0), list(others)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS),
                        default=[m for m in METHODS if m not in ON_REQUEST],
                        help=f"default: all but {', '.join(sorted(ON_REQUEST))}")
    parser.add_argument("--budgets", nargs="+", type=int, default=[1000, 10_000])
    parser.add_argument("--full", action="store_true", help="also 10^5 simulations")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="redo runs that are there")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs that would be made, and make none")
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument("--out", type=Path, default=OUT, help="results folder")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="folder for unfinished runs' models and partial results")
    parser.add_argument("--ledger", type=Path, default=LEDGER,
                        help="folder for unfinished runs' draws as JSON, to commit")
    args = parser.parse_args(argv)
    if args.full and 100_000 not in args.budgets:
        args.budgets.append(100_000)
    torch.set_num_threads(args.threads)
    if not args.report:
        done: set[Path] = set()  # a budget-0 method runs once, whatever the budgets
        estimates: list[float | None] = []  # --dry-run's: each run's expected seconds
        for budget in args.budgets:
            for seed in args.seeds:
                for name in args.tasks:
                    task = TASKS[name]()
                    for method in args.methods:
                        if method in NEEDS_CHART and task.chart is None:
                            continue
                        if method in NEEDS_LIKELIHOOD and task.log_likelihood is None:
                            continue
                        used = 0 if method in NEEDS_LIKELIHOOD else budget
                        path = result_path(args.out, name, method, used, seed)
                        if path in done or not (args.force or _needs_run(path)):
                            continue
                        done.add(path)
                        unfinished = (cache_path(args.cache, name, method, used, seed),
                                      ledger_path(args.ledger, name, method, used, seed))
                        if args.dry_run:
                            expected = expected_seconds(args.out, name, method, used, seed,
                                                        unfinished[1])
                            estimates.append(None if expected is None else expected[0])
                            print(f"would run: {name} {method} n={used} seed {seed}"
                                  + (" (from its ledger)" if unfinished[1].exists() else "")
                                  + ("" if expected is None else
                                     f": about {expected[0] / 3600:.1f} h by seed "
                                     + ", ".join(map(str, expected[1]))))
                            continue
                        if args.force:  # redo it: no model or draws of an earlier attempt
                            for kept in unfinished:
                                kept.unlink(missing_ok=True)
                        result = run_one(task, method, used, seed, args.draws,
                                         cache=args.cache, ledger=args.ledger)
                        result.update(commit=git_commit(), version=sbi_mflow.__version__,
                                      machine=machine(),
                                      settings={"draws": args.draws, "threads": args.threads})
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(json.dumps(result, indent=1) + "\n")
                        for kept in unfinished:
                            kept.unlink(missing_ok=True)
    if args.dry_run:
        total = sum(seconds for seconds in estimates if seconds is not None)
        unknown = estimates.count(None)
        print(f"{len(done)} runs to make: about {total / 3600:.1f} h of "
              f"{args.threads}-thread time by other seeds' runs"
              + (f"; {unknown} more with no other seed's run to go by." if unknown else "."))
        return
    print(table(load_results(args.out)))


if __name__ == "__main__":
    main()
