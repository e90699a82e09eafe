"""The versus-sbi results as a reader sees them: the table of every committed (task, T,
budget, method), the M-flow's verdict against the bar, the charts' reconstruction errors
and the figure of C2ST against simulations (``python -m benchmarks.report`` writes them to
``docs/benchmarks.md``; :mod:`benchmarks.versus_sbi` makes the runs).
"""

from __future__ import annotations

import itertools
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._results import RESULTS, describe_machine, is_older, short_machine
from benchmarks.methods import HELD_OUT, METHODS
from benchmarks.tasks import NUM_OBSERVATIONS, TASKS

__all__ = ["CURRENT_SINCE", "FIGURE", "OUT", "SBI_METHODS", "SWAPS", "chart_table", "figure",
           "is_stale", "load_results", "result_path", "section", "table", "verdicts"]

OUT = RESULTS / "versus_sbi"


def result_path(out: Path, task: str, method: str, budget: int, seed: int) -> Path:
    return out / task / f"{method}-n{budget}-seed{seed}.json"


#: The sbi-mflow version since which each of our methods gives the results it gives now
#: (CHANGELOG.md says what changed): a run of an earlier version is stale, shown apart in the
#: table and left out of the bar and the figure. sbi's methods do not depend on ours: they
#: are not here, and their unfinished runs resume across sbi-mflow versions.
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

