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
and a stopped run of the same sbi-mflow version and ``methods.py`` resumes from them
(``--force`` discards them). ``--dry-run`` lists the runs a command would make;
``--report`` prints the table from the JSON. Commands (one torch thread)::

    python -m benchmarks.versus_sbi                          # 10^3 and 10^4, seeds 0 and 1
    python -m benchmarks.versus_sbi --budgets 1000 --tasks polynomial_surface
    python -m benchmarks.versus_sbi --full                   # adds 10^5
    python -m benchmarks.versus_sbi --report
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle
import numpy
import torch
from torch import Tensor

import sbi_mflow
from benchmarks._results import (
    RESULTS,
    describe_machine,
    git_commit,
    is_older,
    machine,
    short_machine,
)
from benchmarks.methods import (
    HELD_OUT,
    METHODS,
    NEEDS_CHART,
    NEEDS_LIKELIHOOD,
    ON_REQUEST,
    Fitted,
)
from benchmarks.tasks import NUM_OBSERVATIONS, TASKS

OUT = RESULTS / "versus_sbi"


def result_path(out: Path, task: str, method: str, budget: int, seed: int) -> Path:
    return out / task / f"{method}-n{budget}-seed{seed}.json"


#: Unfinished runs: the trained model and the trials sampled so far (git-ignored).
CACHE = Path(__file__).parent / ".cache" / "versus_sbi"


def cache_path(cache: Path, task: str, method: str, budget: int, seed: int) -> Path:
    return cache / task / f"{method}-n{budget}-seed{seed}.pkl"


def _code_key() -> str:
    """sbi-mflow's version and a digest of ``benchmarks/methods.py``: a cached model carries
    its samplers' code (closures are pickled by value), so a change to either retrains."""
    source = (Path(__file__).parent / "methods.py").read_bytes()
    return f"{sbi_mflow.__version__}+{hashlib.sha256(source).hexdigest()[:12]}"


def _load_unfinished(path: Path | None) -> dict | None:
    """What an interrupted run of the same code left at ``path``: its ``fitted`` model, its
    ``result`` so far and, when it stopped inside a T, that T's ``progress``."""
    if path is None or not path.exists():
        return None
    with path.open("rb") as file:
        saved = cloudpickle.load(file)
    if saved.get("code") != _code_key():  # other code's model: train anew
        return None
    return saved


def _save_unfinished(path: Path | None, fitted: Fitted, result: dict,
                     progress: dict | None = None) -> None:
    """Keep the trained model, the trials done so far and the progress inside the current T
    (one pickle, so that the result's ``info`` stays the object the model's sampler writes
    to)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    with partial.open("wb") as file:
        cloudpickle.dump({"code": _code_key(), "fitted": fitted, "result": result,
                          "progress": progress}, file)
    partial.replace(path)  # never a half-written cache


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


def run_one(task, method: str, budget: int, seed: int, draws: int,
            cache: Path | None = None) -> dict:
    """Train ``method`` on ``budget`` simulations of ``task`` (seed ``seed``) and score its
    posterior on observations 1–5 for every T of the task (budget 0: a method that uses no
    simulations).

    With ``cache`` (a folder), the trained model, each T's scores and, for a sampler that
    takes observations one at a time, each observation's draws are kept there as they are
    done, and a run of the same code that was stopped resumes from them (no retraining, no
    T or observation sampled twice); the cache file goes once the run is complete.
    """
    from sbi_mflow.metrics import c2st

    path = cache_path(cache, task.name, method, budget, seed) if cache else None
    unfinished = _load_unfinished(path)
    if unfinished is None:
        torch.manual_seed(seed)
        theta = task.prior.sample((budget,)) if budget else None
        x = task.simulate(theta) if budget else None
        fitted = METHODS[method](task, theta, x, seed)
        result = {"task": task.name, "method": method, "budget": budget, "seed": seed,
                  "train_seconds": fitted.train_seconds, "info": fitted.info, "trials": {}}
        progress = None
        _save_unfinished(path, fitted, result)
    else:
        fitted, result, progress = (unfinished["fitted"], unfinished["result"],
                                    unfinished.get("progress"))
        print(f"  {task.name} {method} n={budget} seed {seed}: trained model loaded from "
              f"{path}" + (f" with T = {', '.join(result['trials'])} done"
                           if result["trials"] else "")
              + (f", {len(progress['draws'])} observations of T = {progress['trials']}"
                 if progress else ""), flush=True)
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
                keep=lambda progress: _save_unfinished(path, fitted, result, progress))
        except SamplingFailed as failure:  # the method's own failure is a result: record it
            seconds, error = time.perf_counter() - start, failure.__cause__
            first_line = (str(error).splitlines() or [""])[0]
            message = f"{type(error).__name__}: {first_line[:200]}"
            result["trials"][str(trials)] = {"error": message, "sample_seconds": seconds}
            print(f"  {task.name} {method} n={budget} seed {seed} T={trials}: failed after "
                  f"{seconds:.0f} s ({message})", flush=True)
            _save_unfinished(path, fitted, result)
            continue
        scores = [c2st(samples[:, j].float(), task.reference(k, trials, draws),
                       classifier="mlp", seed=seed) for j, k in enumerate(ks)]
        result["trials"][str(trials)] = {"c2st": scores, "sample_seconds": seconds}
        print(f"  {task.name} {method} n={budget} seed {seed} T={trials}: C2ST "
              + " ".join(f"{s:.3f}" for s in scores) + f" (sampling {seconds:.0f} s)",
              flush=True)
        _save_unfinished(path, fitted, result)
    return result


#: The sbi-mflow version since which each of our methods gives the results it gives now
#: (CHANGELOG.md says what changed): a run of an earlier version is stale, shown apart in the
#: table and left out of the bar and the figure. sbi's methods do not depend on ours.
CURRENT_SINCE = {
    "fom": "0.2.0.dev5",  # the density phase trains to early stopping; pooled mass matrix
    "exact_likelihood": "0.2.0.dev5",  # the pooled mass matrix
    "nsf_on_mflow_chart": "0.2.0.dev5",  # the M-flow's chart and NUTS
    "mflow": "0.2.0.dev5",  # the density phase trains to early stopping; pooled mass matrix
    "meflow": "0.2.0.dev5",
    "mflow_long": "0.2.0.dev5",
}


def is_stale(run: dict) -> bool:
    """Whether ``run`` is of a version before the last change to its method."""
    return is_older(run["version"], CURRENT_SINCE.get(run["method"]))


def _needs_run(path: Path) -> bool:
    """No result at ``path`` yet, or a stale one (of a version before its method's last
    change)."""
    return not path.exists() or is_stale(json.loads(path.read_text()))


def load_results(out: Path = OUT) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out.glob("*/*.json"))]


def table(results: list[dict]) -> str:
    """Markdown: one row per (task, T, budget, method), mean C2ST over observations 1–5
    (mean over seeds, with the seeds' range), worst observation, wall times, and the
    sbi-mflow version(s) the runs used."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        for trials, scores in r["trials"].items():
            key = (r["task"], int(trials), r["budget"], r["method"], is_stale(r))
            fallback = r.get("info", {}).get("iid_fallback", {}).get(trials)
            if fallback is not None:
                scores = {**scores, "iid_method": fallback["iid_method"]}
            groups.setdefault(key, []).append({**scores, "train": r["train_seconds"],
                                               "version": r["version"], "seed": r["seed"],
                                               "machine": short_machine(r)})
    order = list(METHODS)
    lines = ["| task | T | simulations | method | mean C2ST (seeds' range) | worst obs. "
             "| seeds | train s | sample s | version | machine |",
             "|---|---:|---:|---|---|---:|---:|---:|---:|---|---|"]
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], order.index(k[3]), k[4])):
        label = f"{key[3]} (stale)" if key[4] else key[3]
        fallbacks = sorted({run["iid_method"] for run in groups[key] if "iid_method" in run})
        if fallbacks:
            retried = sum("iid_method" in run for run in groups[key])
            label += (f" (iid_method {', '.join(fallbacks)} in {retried} of "
                      f"{len(groups[key])} seeds)")
        failed = [run["error"] for run in groups[key] if "error" in run]
        runs = [run for run in groups[key] if "error" not in run]
        if failed:
            lines.append(f"| {key[0]} | {key[1]} | {key[2] or '–'} | {label} | failed in "
                         f"{len(failed)} of {len(groups[key])} seeds ({failed[0]}) | | | | "
                         f"| {_versions(groups[key])} | {_machines(groups[key])} |")
        if not runs:
            continue
        means = [statistics.fmean(run["c2st"]) for run in runs]
        worst = max(max(run["c2st"]) for run in runs)
        spread = f" ({min(means):.3f}–{max(means):.3f})" if len(runs) > 1 else ""
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2] or '–'} | {label} | {statistics.fmean(means):.3f}"
            f"{spread} | {worst:.3f} | {', '.join(str(r['seed']) for r in runs)} "
            f"| {statistics.fmean(r['train'] for r in runs):.0f} "
            f"| {statistics.fmean(r['sample_seconds'] for r in runs):.0f} "
            f"| {_versions(runs)} | {_machines(runs)} |")
    return "\n".join(lines)


def chart_table(results: list[dict]) -> str:
    """Markdown: the learned (and true) charts' reconstruction error ‖x − g(e(x))‖₂ on fresh
    simulations, mean over the seeds of runs that recorded it, beside the data's RMS
    distance to its mean; empty when no run recorded it."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if "reconstruction_mean" in r.get("info", {}) and not is_stale(r):
            groups.setdefault((r["task"], r["budget"], r["method"]), []).append(r["info"])
    if not groups:
        return ""
    order = list(METHODS)
    lines = ["| task | simulations | method | mean reconstruction error | median (mean over "
             "seeds) | data RMS | seeds |", "|---|---:|---|---:|---:|---:|---:|"]
    for key in sorted(groups, key=lambda k: (k[0], k[1], order.index(k[2]))):
        infos = groups[key]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} "
                     f"| {statistics.fmean(i['reconstruction_mean'] for i in infos):.3g} "
                     f"| {statistics.fmean(i['reconstruction_median'] for i in infos):.3g} "
                     f"| {statistics.fmean(i['data_rms'] for i in infos):.3g} | {len(infos)} |")
    return "\n".join(lines)


def _versions(runs: list[dict]) -> str:
    return ", ".join(sorted({run["version"] for run in runs}))


def _machines(runs: list[dict]) -> str:
    return ", ".join(sorted({run["machine"] for run in runs}))


#: sbi's methods on the same (lifted) data: what the M-flow must beat.
SBI_METHODS = ("sbi_nle", "sbi_npe", "sbi_npse")
#: (method, the method it swaps one part of, the swap): where the M-flow misses the bar,
#: these say which part is short.
SWAPS = (("nsf_on_mflow_chart", "mflow", "sbi's NSF for our inner flow on the learned chart"),
         ("mflow_long", "mflow", "four times the epochs (a manifold phase of 100 instead "
                                 "of 25)"),
         ("sbi_nle_true_chart", "fom", "sbi's NSF and MCMC for our inner flow and NUTS on "
                                       "the true chart"))


def _per_observation(results: list[dict], task: str, trials: int, budget: int,
                     method: str) -> dict[int, list[float]]:
    """seed -> C2ST of observations 1–5 for one (task, T, budget, method)."""
    return {r["seed"]: r["trials"][str(trials)]["c2st"] for r in results
            if (r["task"], r["budget"], r["method"]) == (task, budget, method)
            and "c2st" in r["trials"].get(str(trials), {})}


def _failures(results: list[dict], task: str, trials: int, budget: int, method: str
              ) -> dict[int, str]:
    """seed -> error of the runs of one (task, T, budget, method) that raised."""
    return {r["seed"]: r["trials"][str(trials)]["error"] for r in results
            if (r["task"], r["budget"], r["method"]) == (task, budget, method)
            and "error" in r["trials"].get(str(trials), {})}


def _paired_means(a: dict[int, list[float]], b: dict[int, list[float]]
                  ) -> tuple[float, float, list[int]] | None:
    """Mean C2ST of two methods over the seeds both ran (same simulations), and the seeds."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return (statistics.fmean(statistics.fmean(a[s]) for s in seeds),
            statistics.fmean(statistics.fmean(b[s]) for s in seeds), seeds)


def _seeds(seeds: list[int]) -> str:
    return "seed " + ", ".join(map(str, seeds)) if len(seeds) < 3 else f"{len(seeds)} seeds"


@dataclass
class _Verdict:
    """The parts of one task's verdict line, the comparisons not run, and whether the bar
    holds so far."""

    parts: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # no result at all yet
    other_seeds: list[str] = field(default_factory=list)  # results, none of the M-flow's seeds
    met: bool = True

    def lack(self, method: str, runs: dict) -> None:
        """Record that ``method`` has no result paired with the M-flow's seeds; ``runs``
        are its results (seed -> scores) at this task, budget and T."""
        (self.other_seeds if runs else self.missing).append(method)

    @property
    def state(self) -> str:
        """"missed" when a comparison made misses, else "incomplete" when one is not made
        yet, else "met"."""
        if not self.met:
            return "missed"
        return "incomplete" if self.missing or self.other_seeds else "met"


def _against_sbi(verdict: _Verdict, results: list[dict], mflow: dict, key: tuple) -> None:
    """Below every sbi method's mean C2ST, over the seeds both ran."""
    for method in SBI_METHODS:
        runs = _per_observation(results, *key, method)
        paired = _paired_means(mflow, runs)
        failed = _failures(results, *key, method)
        if paired is None and set(failed) & set(mflow):
            seeds = sorted(set(failed) & set(mflow))
            verdict.parts.append(f"{method} gave no posterior ({_seeds(seeds)}: "
                                 f"{failed[seeds[0]]})")
        elif paired is None:
            verdict.lack(method, {**runs, **failed})
        else:
            ours, theirs, seeds = paired
            verdict.met &= ours < theirs
            verdict.parts.append(f"{'below' if ours < theirs else 'not below'} {method} "
                                 f"({ours:.3f} against {theirs:.3f}, {_seeds(seeds)})")


def _against_fom(verdict: _Verdict, results: list[dict], mflow: dict, key: tuple,
                 has_chart: bool) -> None:
    """Within +0.03 of FOM's mean C2ST and no observation more than +0.10 above FOM's."""
    fom = _per_observation(results, *key, "fom")
    paired = _paired_means(mflow, fom)
    if paired is None:
        if has_chart:
            verdict.lack("fom", fom)
        else:
            verdict.parts.append("no true chart, so no FOM")
        return
    ours, oracle, seeds = paired
    gap = ours - oracle
    excess = max(a - b for seed in seeds for a, b in zip(mflow[seed], fom[seed], strict=True))
    # C2ST scores are fractions k/2000 stored as floats: their differences carry ~1e-16 of
    # rounding, so the targets are compared with 1e-9 to spare.
    gap_met, excess_met = gap <= 0.03 + 1e-9, excess <= 0.10 + 1e-9
    verdict.met &= gap_met and excess_met
    verdict.parts.append(f"M-flow − FOM {gap:+.4f} ({'met' if gap_met else 'missed'}; "
                         f"target ≤ +0.03, {_seeds(seeds)})")
    verdict.parts.append(f"largest excess over FOM on one observation {excess:+.4f} "
                         f"({'met' if excess_met else 'missed'}; target ≤ +0.10)")
    if len(fom) > 1:  # the same method and observation, other simulations and training
        noise = max(abs(a - b) for s, t in itertools.combinations(sorted(fom), 2)
                    for a, b in zip(fom[s], fom[t], strict=True))
        verdict.parts.append(f"FOM against itself, largest difference between two seeds on "
                             f"one observation {noise:.4f} (the seeds' noise: other "
                             "simulations and training)")


def _diagnostics(verdict: _Verdict, results: list[dict], key: tuple) -> None:
    """What the sampler alone leaves (the true likelihood) and each swap beside its base."""
    task, trials, _ = key
    exact = _per_observation(results, task, trials, 0, "exact_likelihood")
    if exact:
        verdict.parts.append(
            "the sampler on the true likelihood (no estimator error) "
            f"{statistics.fmean(statistics.fmean(v) for v in exact.values()):.3f}")
    for method, base, swap in SWAPS:
        paired = _paired_means(_per_observation(results, *key, method),
                               _per_observation(results, *key, base))
        if paired is not None:
            verdict.parts.append(f"{swap}: {paired[0]:.3f} against {base}'s "
                                 f"{paired[1]:.3f} ({_seeds(paired[2])})")


def verdicts(results: list[dict], budget: int = 10_000, trials: int = 20) -> list[str]:
    """The M-flow against the bar on every task with T trials at ``budget`` simulations:
    mean C2ST below every sbi method's, within +0.03 of FOM's, and no observation more than
    +0.10 above FOM's; each comparison over the seeds both methods ran (same data), of
    runs that are not stale."""
    results = [r for r in results if not is_stale(r)]
    lines, states = [], {}
    for task, make_task in TASKS.items():
        spec = make_task()
        if trials not in spec.trials:
            lines.append(f"- {task}: no reference posterior for T = {trials}.")
            continue
        key = (task, trials, budget)
        mflow = _per_observation(results, *key, "mflow")
        if not mflow:
            states[task] = "incomplete"
            lines.append(f"- {task}: no M-flow run of {CURRENT_SINCE['mflow']} or later "
                         f"with T = {trials} yet.")
            continue
        verdict = _Verdict()
        _against_sbi(verdict, results, mflow, key)
        _against_fom(verdict, results, mflow, key, spec.chart is not None)
        _diagnostics(verdict, results, key)
        states[task] = verdict.state
        own = statistics.fmean(statistics.fmean(v) for v in mflow.values())
        text = (f"- {task}: M-flow {own:.3f} ({_seeds(sorted(mflow))}); "
                + ("; ".join(verdict.parts) if verdict.parts else "no comparison run yet"))
        if verdict.missing:
            text += f". Not run yet: {', '.join(verdict.missing)}"
        if verdict.other_seeds:
            text += f". Run only with other seeds: {', '.join(verdict.other_seeds)}"
        lines.append(f"{text}. Bar: {verdict.state}.")
    by_state = {state: [t for t, s in states.items() if s == state]
                for state in ("missed", "incomplete")}
    summary = "; ".join(f"{state} on {', '.join(tasks)}" for state, tasks in by_state.items()
                        if tasks)
    met = bool(states) and not summary
    lines.append(f"\nBar met on every task: {'yes' if met else 'no (' + summary + ')'}.")
    return lines


def figure(results: list[dict], path: Path) -> None:
    """C2ST against simulations, one panel per (task, T) and one line per method (mean over
    observations 1–5 and seeds; runs that are not stale); a method that uses no simulations
    is a dashed level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple, dict[str, dict[int, list[float]]]] = {}
    for r in (r for r in results if not is_stale(r)):
        for trials, scores in r["trials"].items():
            if "c2st" not in scores:  # the method raised: no point to draw
                continue
            panel = curves.setdefault((r["task"], int(trials)), {})
            panel.setdefault(r["method"], {}).setdefault(r["budget"], []).append(
                statistics.fmean(scores["c2st"]))
    panels = sorted(curves)
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows),
                             squeeze=False)
    for ax, key in zip(axes.flat, panels, strict=False):
        for colour, method in enumerate(METHODS):  # one colour per method in every panel
            if method in curves[key] and 0 in curves[key][method]:  # uses no simulations
                ax.axhline(statistics.fmean(curves[key][method][0]), color=f"C{colour}",
                           ls="--", lw=1, label=method)
            elif method in curves[key]:
                budgets = sorted(curves[key][method])
                means = [statistics.fmean(curves[key][method][b]) for b in budgets]
                ax.plot(budgets, means, "o-", color=f"C{colour}", label=method)
        ax.set(xscale="log", title=f"{key[0]}, T={key[1]}", xlabel="simulations",
               ylabel="mean C2ST", ylim=(0.45, 1.0))
        ax.axhline(0.5, color="grey", lw=0.5)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    handles = {label: handle for ax in axes.flat
               for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    labels = [method for method in METHODS if method in handles]
    fig.legend([handles[m] for m in labels], labels, loc="center left",
               bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


#: Where ``python -m benchmarks.report`` draws :func:`figure` (relative to ``docs/``).
FIGURE = "figures/versus_sbi.png"


def _full_budget_paragraph(results: list[dict], budget: int = 100_000) -> str:
    """The same comparisons at ``budget`` simulations, for the tasks with an M-flow run
    there (``--full``): whether a gap at 10⁴ closes with more simulations."""
    tasks = {r["task"] for r in results
             if r["method"] == "mflow" and r["budget"] == budget and not is_stale(r)}
    lines = [line for line in verdicts(results, budget=budget)
             if any(line.startswith(f"- {task}:") for task in tasks)]
    if not lines:
        return ""
    return (f"\n\nThe same comparisons at {budget} simulations, where the M-flow has run "
            "there:\n\n" + "\n".join(lines))


def _charts_paragraph(results: list[dict]) -> str:
    charts = chart_table(results)
    if not charts:
        return ""
    return (f"\n\nThe charts of the manifold methods on {HELD_OUT} fresh simulations of the task "
            "(FOM's is the true chart: its error is rounding):\n\n" + charts)


def section() -> str:
    """The table of every committed (task, T, budget, method) and the figure."""
    results = load_results(OUT)
    if not results:
        return ""
    machines = sorted({describe_machine(r) for r in results})
    draws = " or ".join(sorted({str(r["settings"]["draws"]) for r in results}))
    return (
        "## sbi-mflow against sbi's estimators (`python -m benchmarks.versus_sbi`)\n\n"
        "Every method of a (task, simulations, seed) trains on the same simulations and is "
        f"scored on observations 1–{NUM_OBSERVATIONS} by C2ST against the task's reference "
        f"posterior (0.5: indistinguishable), {draws} draws each. Mean over the observations, "
        "then over the seeds (their range in brackets); \"worst obs.\" is the largest C2ST "
        "of any observation and seed; times are per run (sampling: all observations). "
        "Methods: sbi's NLE, NPE "
        "(for T > 1 through its MCMC potential) and NPSE (its `iid_method`); FOM, the inner "
        "flow on the task's true chart; sbi_nle_true_chart, sbi's NLE on that chart's "
        "coordinates (against FOM: sbi's NSF and MCMC for our inner flow and NUTS); M-flow "
        "and Me-flow with the library's defaults; nsf_on_mflow_chart, sbi's NSF trained on "
        "the M-flow's encodings and sampled by the same NUTS (against M-flow: sbi's NSF for "
        "our inner flow on the learned chart; its train s includes training that M-flow); "
        "mflow_long, the M-flow with four times the epoch budget (against M-flow: whether "
        "the learned chart is short of training or of simulations; run where the bar "
        "misses); "
        "exact_likelihood, the same NUTS sampler on "
        "the task's true likelihood (no simulations: what the sampler alone leaves). "
        "\"version\" is sbi-mflow's when the run started; \"machine\" is the processor the "
        "times were measured on (one torch thread, often with another run on the other "
        "core), so compare times on the same machine. A run of a version before the "
        "last change to its method ("
        + "; ".join(f"{method}: {since}" for method, since in CURRENT_SINCE.items())
        + "; CHANGELOG.md says what changed) is marked stale and left out of the bar and "
        "the figure.\n\n"
        + table(results)
        + "\n\nWith T = 20 trials at 10⁴ simulations, the M-flow against the bar (mean C2ST "
        "below every sbi method's on the same data, within +0.03 of FOM's, no observation "
        "more than +0.10 above FOM's; each comparison over the seeds both ran):\n\n"
        + "\n".join(verdicts(results))
        + _full_budget_paragraph(results)
        + _charts_paragraph(results)
        + f"\n\n![C2ST against simulations]({FIGURE})\n\nMachines: "
        + "; ".join(machines) + ".\n")


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
    args = parser.parse_args(argv)
    if args.full and 100_000 not in args.budgets:
        args.budgets.append(100_000)
    torch.set_num_threads(args.threads)
    if not args.report:
        done: set[Path] = set()  # a budget-0 method runs once, whatever the budgets
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
                        if args.dry_run:
                            print(f"would run: {name} {method} n={used} seed {seed}")
                            continue
                        if args.force:  # redo it: no model of an earlier attempt
                            cache_path(args.cache, name, method, used, seed).unlink(
                                missing_ok=True)
                        result = run_one(task, method, used, seed, args.draws,
                                         cache=args.cache)
                        result.update(commit=git_commit(), version=sbi_mflow.__version__,
                                      machine=machine(),
                                      settings={"draws": args.draws, "threads": args.threads})
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(json.dumps(result, indent=1) + "\n")
                        cache_path(args.cache, name, method, used, seed).unlink(missing_ok=True)
    if args.dry_run:
        print(f"{len(done)} runs to make.")
        return
    print(table(load_results(args.out)))


if __name__ == "__main__":
    main()
