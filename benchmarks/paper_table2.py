"""Benchmark: the paper's Table 2 (mixture model on a polynomial surface) reproduced.

Every row of Table 2 with a tractable density is trained on ``PolynomialSurface`` simulations
(θ ~ U[-1, 1], x on a 2-D surface in R³) and scored with the paper's four metrics
(``../shared/reference/reference-implementation.md`` §4), median over seeds:

* manifold distance: mean over model samples x ~ p̂(x|θ), θ ~ prior, of min(dist(x, M), 10);
* reconstruction error: mean over 1000 test points (θ = 0) of min(‖x − g(g⁻¹(x))‖₂, 10);
* posterior MMD: unbiased MMD² (Gaussian kernel, median heuristic on the reference) between
  posterior samples from the model likelihood and from the true likelihood, both for the
  same 20 observations at θ = 0. θ is 1-D, so both posteriors are sampled on the same
  regular grid of θ (cell midpoints, inverse CDF with jitter inside the cell): the model
  posterior is ∝ π(θ) Πᵢ p̂(xᵢ|θ) evaluated with the model's exact ``log_prob``; the
  reference is ``PolynomialSurface.reference_posterior``. This removes sampler error from
  the comparison (the paper used random-walk Metropolis for both);
* OOD AUC: the larger of the two symmetrised ROC AUCs (model log-likelihood at θ = 0, and
  reconstruction error) between 1000 test points and 1000 OOD points x(θ=0) + 0.1·N(0, I).

Rows: AF (sbi's own ``likelihood_nn("nsf")`` through sbi's ``NLE``), PIE (original: the
manifold depends on θ, ``pie-conditional``), PIE (unconditional manifold), M-flow and
Me-flow each with alternating and sequential M/D training, and FOM (not in the paper's
Table 2): the same inner flow on the true chart ``PolynomialSurface().manifold_chart()``,
trained like the sequential rows' density phase (``density_epochs``; no manifold phase).

Each (row, seed) result is written to ``--cache``/``n<simulations>-e<epochs>/<row>-seed<k>.json``
as soon as it is done, with its settings; a rerun skips a result whose settings (budget,
architecture, library version) are those asked for and redoes the others, so an interrupted
run resumes, runs can be split across processes (``--rows``, ``--seeds``), and the folder
holds the latest result of every row (earlier ones are in git). ``--report`` only prints the
table. Commands::

    python -m benchmarks.paper_table2              # reduced budget (10 seeds, 2-3 h on one core)
    python -m benchmarks.paper_table2 --full       # the paper's budget (10^5 samples)
    python -m benchmarks.paper_table2 --report

The paper's published medians are printed beside ours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

import sbi_mflow
from benchmarks._results import (
    RESULTS,
    describe_machine,
    git_commit,
    is_older,
    machine,
    machines_of,
    markdown_table,
)
from sbi_mflow import metrics
from sbi_mflow.config import ManifoldFlowConfig
from sbi_mflow.priors import prior_on_device
from sbi_mflow.tracking import NullTracker
from sbi_mflow.training import TrainConfig
from simulators import PolynomialSurface
from simulators._posterior import grid_posterior

#: key -> (label, model, schedule); model "af" is sbi's NSF.
ROWS = {
    "af": ("AF (sbi NSF)", "af", None),
    "pie-original": ("PIE (original)", "pie-conditional", "simultaneous"),
    "pie-uncond": ("PIE (uncond. manifold)", "pie", "simultaneous"),
    "mflow-alt": ("M-flow (alternating M/D)", "mflow", "alternating"),
    "mflow-seq": ("M-flow (sequential M/D)", "mflow", "sequential"),
    "meflow-alt": ("Me-flow (alternating M/D)", "meflow", "alternating"),
    "meflow-seq": ("Me-flow (sequential M/D)", "meflow", "sequential"),
    "fom": ("FOM (true manifold)", "fom", "sequential"),
}

#: model -> its prescribed chart (a model not listed learns its chart).
CHARTS = {"fom": lambda: PolynomialSurface().manifold_chart()}

#: The paper's Table 2 medians: manifold distance, reconstruction error, MMD, OOD AUC.
PAPER = {
    "af": (0.005, None, 0.071, 0.990),
    "pie-original": (0.035, 1.278, 0.131, 0.933),
    "pie-uncond": (0.006, 1.253, 0.075, 0.972),
    "mflow-alt": (0.002, 0.003, 0.020, 0.986),
    "mflow-seq": (0.009, 0.013, 0.017, 0.961),
    "meflow-alt": (0.003, 0.003, 0.030, 0.985),
    "meflow-seq": (0.002, 0.002, 0.007, 0.987),
    "fom": (None, None, None, None),  # not in the paper's Table 2
}
METRICS = ("manifold_distance", "reconstruction_error", "posterior_mmd", "ood_auc")

#: The sbi-mflow version since which each row trains as it does now (CHANGELOG.md): a
#: result of an earlier version is stale, shown in its own row and left out of the medians
#: and the comparisons. The rows not listed have not changed since their oldest result.
CURRENT_SINCE = {
    "mflow-seq": "0.2.0.dev5",  # the density phase trains to early stopping
    "meflow-seq": "0.2.0.dev5",
    "fom": "0.2.0.dev5",
}

REDUCED = dict(simulations=10_000, epochs=20, density_epochs=60)
FULL = dict(simulations=100_000, epochs=50, density_epochs=None)


def _data(simulator: PolynomialSurface, args: argparse.Namespace, seed: int) -> dict:
    """Training simulations (seeded per run) and the shared evaluation data (seed 1000)."""
    torch.manual_seed(seed)
    theta = simulator.prior.sample((args.simulations,))
    score = None
    if args.scandal_weight:
        x, score = simulator.simulate_with_score(theta)
    else:
        x = simulator(theta)
    torch.manual_seed(1000)
    theta0 = simulator.default_theta.expand(1000, 1)
    x_test = simulator(theta0)
    x_ood = simulator(theta0) + 0.1 * torch.randn(1000, 3)
    return dict(theta=theta, x=x, score=score, x_test=x_test, x_ood=x_ood, x_obs=x_test[:20])


def _train(row: str, data: dict, args: argparse.Namespace, seed: int):
    from sbi.inference import NLE
    from sbi.neural_nets import likelihood_nn

    _, model, schedule = ROWS[row]
    prior = PolynomialSurface().prior
    torch.manual_seed(seed)
    device = args.device
    if model == "af":
        # Same number of coupling layers overall as the manifold models (outer + inner).
        build = likelihood_nn("nsf", num_transforms=args.outer_layers + args.inner_layers,
                              hidden_features=args.hidden_features, num_bins=args.bins)
        inference = NLE(prior_on_device(prior, device), density_estimator=build,
                        show_progress_bars=False, device=device)
        estimator = inference.append_simulations(data["theta"], data["x"]).train(
            max_num_epochs=args.epochs, training_batch_size=100, learning_rate=1e-3,
            stop_after_epochs=args.epochs,
        )
        seconds = inference.summary.get("epoch_durations_sec", [])
        return estimator, [{"phase": "af", "seconds": float(t)} for t in seconds]
    chart = CHARTS[model]() if model in CHARTS else None
    build = sbi_mflow.manifold_likelihood_nn(
        model, 2, chart=chart, outer_layers=args.outer_layers, inner_layers=args.inner_layers,
        hidden_features=args.hidden_features, num_bins=args.bins, linear_layer=args.linear_layer,
        tangent_alignment=args.alignment, graph_layer=args.graph_layer,
    )
    inference = sbi_mflow.ManifoldNLE(prior, density_estimator=build, show_progress_bars=False,
                                      device=device, tracker=NullTracker())
    inference.append_simulations(data["theta"], data["x"], score=data["score"])
    options = dict(schedule=schedule, max_num_epochs=args.epochs, stop_after_epochs=args.epochs,
                   manifold_candidates=args.candidates, manifold_retries=args.retries,
                   training_batch_size=args.batch, manifold_learning_rate=args.manifold_lr,
                   scandal_weight=args.scandal_weight, compile=args.compile)
    if schedule == "sequential":
        options["density_epochs"] = args.density_epochs
    estimator = inference.train(**options)
    return estimator, [{"phase": e["phase"], "seconds": e["seconds"]}
                       for e in inference.summary["phases"]]


def _model_samples(estimator, num: int) -> torch.Tensor:
    """``num`` samples x ~ p̂(x|θ) for 10 θ drawn from the prior, (num, 3)."""
    theta = PolynomialSurface().prior.sample((10,))
    with torch.no_grad():
        x = estimator.sample((num // 10,), condition=theta)
    return x.reshape(-1, x.shape[-1])


def _model_posterior(estimator, x_obs: torch.Tensor, num: int, grid: int) -> torch.Tensor:
    """θ ~ π(θ) Πᵢ p̂(xᵢ|θ) on a ``grid``-cell grid of [-1, 1] (exact model log_prob)."""
    trials = x_obs.shape[0]

    device = next(estimator.parameters()).device

    @torch.no_grad()
    def log_lik(theta: torch.Tensor) -> torch.Tensor:
        theta = theta.float().to(device)
        x = x_obs.float().to(device).unsqueeze(1).expand(trials, theta.shape[0], 3)
        return estimator.log_prob(x, condition=theta).double().sum(0).cpu()

    low, high = -torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    return grid_posterior(log_lik, low, high, num, grid, chunk=50)


def evaluate(row: str, estimator, data: dict, args: argparse.Namespace) -> dict:
    """The four Table 2 metrics of one trained estimator."""
    simulator = PolynomialSurface()
    estimator.eval().cpu()
    theta0 = simulator.default_theta.float()
    torch.manual_seed(2000)
    result = {}
    x_gen = _model_samples(estimator, args.generate)
    result["manifold_distance"] = metrics.mean_distance_to_manifold(x_gen.double(), simulator)
    has_manifold = callable(getattr(estimator, "reconstruction_error", None))
    condition = theta0 if ROWS[row][1] == "pie-conditional" else None
    result["reconstruction_error"] = (
        metrics.mean_reconstruction_error(data["x_test"], estimator, condition=condition)
        if has_manifold else None
    )
    reference = simulator.reference_posterior(data["x_obs"].double(), args.posterior_samples)
    posterior = _model_posterior(estimator, data["x_obs"], args.posterior_samples, args.grid)
    result["posterior_mmd"] = metrics.mmd_squared(posterior, reference)
    result["posterior_c2st"] = metrics.c2st(posterior[:2000].float(), reference[:2000].float())
    ood = metrics.ood_auc(estimator, data["x_test"], data["x_ood"], theta=theta0)
    result["ood_auc"] = ood.auc
    result["ood_auc_likelihood"] = ood.likelihood
    result["ood_auc_reconstruction"] = ood.reconstruction
    return result


def run_one(row: str, seed: int, args: argparse.Namespace) -> dict:
    simulator = PolynomialSurface()
    data = _data(simulator, args, seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator, epochs = _train(row, data, args, seed)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = evaluate(row, estimator, data, args)
    result.update(row=row, seed=seed, train_seconds=train_seconds,
                  eval_seconds=time.perf_counter() - start,
                  epoch_seconds=epochs)
    return result


def _budget(args: argparse.Namespace) -> dict:
    """Everything that changes a result: budget, architecture, training and evaluation
    settings, and the library version (a new version means new results)."""
    keys = ("simulations", "epochs", "density_epochs", "outer_layers", "inner_layers",
            "hidden_features", "bins", "linear_layer", "alignment", "graph_layer", "candidates",
            "retries", "batch", "manifold_lr", "scandal_weight", "compile", "generate",
            "posterior_samples", "grid")
    return {**{k: getattr(args, k) for k in keys}, "sbi_mflow": sbi_mflow.__version__}


def _cache_file(cache: Path, simulations: int, epochs: int, row: str, seed: int) -> Path:
    return Path(cache) / f"n{simulations}-e{epochs}" / f"{row}-seed{seed}.json"


def _is_current(path: Path, settings: dict) -> bool:
    """Whether the result at ``path`` was measured with ``settings``."""
    if not path.exists():
        return False
    stored = json.loads(path.read_text()).get("settings", {})
    return all(stored.get(key) == value for key, value in settings.items())


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _median(results: list[dict], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def _version(result: dict) -> str:
    return result.get("settings", {}).get("sbi_mflow", "–")


def is_stale(result: dict) -> bool:
    """Whether ``result`` is of a version before the last change to its row's training."""
    return is_older(_version(result), CURRENT_SINCE.get(result["row"]))


def _results(folder: Path, row: str) -> list[dict]:
    """The current (not stale) results of ``row`` in ``folder``."""
    return [r for r in _all_results(folder, row) if not is_stale(r)]


def _all_results(folder: Path, row: str) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(folder.glob(f"{row}-seed*.json"))]


def _seeds(results: list[dict]) -> str:
    """The seeds of ``results``, consecutive ones as a range: "0–4, 7"."""
    runs: list[list[int]] = []
    for seed in sorted({r["seed"] for r in results}):
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs)


def _seed_word(results: list[dict]) -> str:
    return "seed" if len({r["seed"] for r in results}) == 1 else "seeds"


def _table_row(label: str, row: str, results: list[dict]) -> list:
    ours = [_median(results, key) for key in METRICS]
    versions = sorted({_version(r) for r in results})
    return ([label, _seeds(results)]
            + [f"{_fmt(o)} ({_fmt(p)})" for o, p in zip(ours, PAPER[row], strict=True)]
            + [_fmt(_median(results, "posterior_c2st")),
               f"{_median(results, 'train_seconds'):.0f}", ", ".join(versions),
               machines_of(results)])


def table(folder: Path) -> str:
    """Markdown table of one budget's folder: our medians over the seeds beside the paper's
    (in brackets), the library version and the median training seconds of each row; stale
    results (:func:`is_stale`) in rows of their own, after the current ones."""
    rows, stale_rows, af_mmd, mmds = [], [], None, {}
    for row, (label, _, _) in ROWS.items():
        every = _all_results(folder, row)
        results = [r for r in every if not is_stale(r)]
        stale = [r for r in every if is_stale(r)]
        if stale:
            stale_rows.append(_table_row(f"{label} (stale)", row, stale))
        if not results:
            continue
        mmd = _median(results, "posterior_mmd")
        if row == "af":
            af_mmd = mmd
        elif mmd is not None:
            mmds[label] = mmd
        rows.append(_table_row(label, row, results))
    rows += stale_rows
    text = markdown_table(["model", "seeds", "manifold distance", "reconstruction error",
                           "posterior MMD²", "OOD AUC", "posterior C2ST", "train s",
                           "version", "machine"], rows)
    if af_mmd is not None and mmds:
        below = [label for label, mmd in mmds.items() if mmd < af_mmd]
        text += (f"\n\nMedian posterior MMD² below the AF's ({af_mmd:.3f}): {len(below)} of "
                 f"{len(mmds)} rows" + (f" (not: {', '.join(sorted(set(mmds) - set(below)))})"
                                         if len(below) < len(mmds) else "") + ".")
    return text


#: The rows whose medians the paper's claims are about, and the metrics compared with it.
CLAIMED_ROWS = ("mflow-alt", "mflow-seq", "meflow-alt", "meflow-seq")
CLAIMED_METRICS = ("posterior_mmd", "reconstruction_error")


def _range(results: list[dict], key: str) -> str:
    values = [r[key] for r in results if r.get(key) is not None]
    return f" ({min(values):.4f}–{max(values):.4f})" if len(values) > 1 else ""


def paper_bar(folder: Path) -> str:
    """The M/D rows' medians against the paper's, compared at the paper's precision (it
    prints three decimals, so 0.0024 is its 0.002), and the cost of one seed of every row."""
    lines = []
    for row in CLAIMED_ROWS:
        results = _results(folder, row)
        if not results:
            continue
        checks = []
        for key in CLAIMED_METRICS:
            ours, paper = _median(results, key), PAPER[row][METRICS.index(key)]
            met = round(ours, 3) <= paper
            name = "MMD²" if key == "posterior_mmd" else "reconstruction"
            checks.append(f"{name} {ours:.4f}{_range(results, key)} against {paper:.3f} "
                          f"({'met' if met else f'missed by {round(ours, 3) - paper:.3f}'})")
        lines.append(f"- {ROWS[row][0]}, {_seed_word(results)} {_seeds(results)}: "
                     + "; ".join(checks) + ".")
    if not lines:
        return ""
    text = ("The paper's medians for its M/D rows, against ours at the paper's precision "
            "(the seeds' range in brackets):\n\n" + "\n".join(lines))
    fom = _results(folder, "fom")
    if fom:
        text += (f"\n\nFOM (the true chart, same inner flow), {_seed_word(fom)} {_seeds(fom)}: "
                 "median "
                 f"MMD² {_median(fom, 'posterior_mmd'):.4f}{_range(fom, 'posterior_mmd')}, "
                 "a reference for what the density estimator gives at this budget on the "
                 "exact chart, not a bound: a learned chart's row can be below it when the "
                 "seeds vary more than the rows differ.")
    totals: dict[int, float] = {}
    for path in sorted(folder.glob("*-seed*.json")):
        result = json.loads(path.read_text())
        totals[result["seed"]] = totals.get(result["seed"], 0.0) + (
            result["train_seconds"] + result.get("eval_seconds", 0.0))
    complete = [seed for seed in totals
                if all((folder / f"{row}-seed{seed}.json").exists() for row in ROWS)]
    if complete:
        hours = ", ".join(f"seed {seed} {totals[seed] / 3600:.2f} h" for seed in complete)
        text += (f"\n\nOne seed of every row, training and evaluation summed over the rows "
                 f"(one torch thread per process): {hours}.")
    return text


def _epoch_table(folder: Path) -> str:
    """Seconds per epoch of short runs that time the full budget's epochs."""
    rows = []
    for path in sorted(folder.glob("*-seed*.json")):
        r = json.loads(path.read_text())
        epochs = r.get("epoch_seconds") or []
        rows.append([ROWS[r["row"]][0], describe_machine(r)]
                    + [" ".join(f"{e['seconds']:.1f}" for e in epochs if e["phase"] == phase)
                       or "–" for phase in ("manifold", "density")])
    return markdown_table(["model", "device", "manifold epochs, s each",
                           "density epochs, s each"], rows)


def section() -> str:
    """Table 2 of the paper, one table per budget, and the full budget's epoch timings."""
    parts = []
    for folder in sorted((RESULTS / "table2").glob("n*-e*"), key=lambda p: p.name):
        results = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
        if not results:
            continue
        machines = sorted({describe_machine(r) for r in results})
        parts.append(f"Budget {folder.name} (simulations, manifold epochs); training "
                     f"settings recorded with the results: {_budget_text(results)}.\n\n"
                     + table(folder)
                     + (f"\n\n{bar}" if (bar := paper_bar(folder)) else "")
                     + "\n\nMachines: " + "; ".join(machines) + ".")
    timing = RESULTS / "gpu_h200" / "table2_epochs_n100000"
    timed = [json.loads(f.read_text()) for f in sorted(timing.glob("*.json"))]
    if timed:
        budget = timed[0].get("settings") or timed[0].get("budget", {})
        parts.append(f"Epoch times at {budget.get('simulations')} simulations, batch "
                     f"{budget.get('batch')}, from short runs of "
                     f"{budget.get('epochs')} manifold and {budget.get('density_epochs')} "
                     "density epochs (`bash scripts/gpu_checks.sh`, step `table2_epochs`, its "
                     "results copied to `benchmarks/results/gpu_h200/`); the manifold phase "
                     "starts with its candidate initialisations' epochs, and on the GPU the "
                     "training step is compiled, so the first epoch of a phase includes "
                     "compilation:\n\n" + _epoch_table(timing))
    if not parts:
        return ""
    return ("## The paper's Table 2: mixture model on a polynomial surface "
            "(`python -m benchmarks.paper_table2`)\n\n"
            "Medians over seeds, the paper's published medians in brackets. Posterior MMD² "
            "is between model and true posterior draws for one observation of 20 iid trials "
            "at θ = 0 (the same data for every row and seed), both on the same θ grid (no "
            "sampler error); OOD AUC separates test points from points pushed 0.1·N(0, I) "
            "off the surface, the larger of the AUCs of the model's log-likelihood and of "
            "its reconstruction error. FOM (the inner flow on the true chart) is not a row "
            "of the paper's table: it is what the same density estimator gives on the exact "
            "chart. A row marked stale ran with a version before the last change to its "
            "training (CHANGELOG.md) and is left out of the comparisons.\n\n"
            + "\n\n".join(parts) + "\n")


def _budget_text(results: list[dict]) -> str:
    """The training settings the results recorded: one value where they agree, all values
    where they differ, and how many recorded none."""
    keys = ("simulations", "epochs", "density_epochs", "batch", "outer_layers",
            "inner_layers", "hidden_features", "bins", "compile")
    recorded = [r.get("settings") or r.get("budget") for r in results]
    recorded = [s for s in recorded if s]
    parts = []
    for key in keys:
        values = sorted({str(s[key]) for s in recorded if key in s})
        if values:
            parts.append(f"{key} {' or '.join(values)}")
    text = ", ".join(parts)
    missing = len(results) - len(recorded)
    return text + (f" ({missing} of {len(results)} results recorded no settings)"
                   if missing else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the paper's budget (10^5 sims)")
    parser.add_argument("--simulations", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--density-epochs", type=int)
    parser.add_argument("--outer-layers", type=int, default=5)
    parser.add_argument("--inner-layers", type=int, default=5)
    parser.add_argument("--hidden-features", type=int, default=64)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--linear-layer", choices=["permutation", "lu"], default="permutation",
                        help="linear layers between the couplings of the manifold models")
    parser.add_argument("--alignment", action=argparse.BooleanOptionalAction,
                        default=ManifoldFlowConfig.tangent_alignment,
                        help="tangent alignment of the chart (library default: on)")
    parser.add_argument("--graph-layer", action=argparse.BooleanOptionalAction,
                        default=ManifoldFlowConfig.graph_layer,
                        help="the chart's graph layer (library default: on)")
    parser.add_argument("--candidates", type=int, default=TrainConfig.manifold_candidates,
                        help="candidate initialisations of the manifold phase")
    parser.add_argument("--retries", type=int, default=TrainConfig.manifold_retries,
                        help="restarts of the manifold phase when the stall check fails")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--manifold-lr", type=float,
                        help="learning rate of the manifold phase (default: the library's)")
    parser.add_argument("--scandal-weight", type=float, default=0.0,
                        help="SCANDAL weight α of the manifold models' density phase, with "
                             "the simulator's joint scores (not a row of the paper's Table 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", type=lambda v: {"true": True, "false": False}
                        .get(v.lower(), v), help="torch.compile the manifold models' training "
                        "step: true, false or auto (CUDA only). Default: true with --full "
                        "(on the CPU a compiled epoch is 1.5-2x faster, and compiling takes "
                        "minutes, which runs of 50 epochs at 10^5 pay back), else auto")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--generate", type=int, default=10_000)
    parser.add_argument("--posterior-samples", type=int, default=5000)
    parser.add_argument("--grid", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=RESULTS / "table2")
    parser.add_argument("--report", action="store_true", help="only print the cached table")
    args = parser.parse_args(argv)
    budget = FULL if args.full else REDUCED
    for key, value in budget.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.compile is None:
        args.compile = True if args.full else "auto"
    if args.manifold_lr is None:
        args.manifold_lr = TrainConfig(training_batch_size=args.batch).resolved(
            torch.device(args.device)).manifold_learning_rate
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    settings = _budget(args)
    if not args.report:
        print(f"settings: {settings}; rows {args.rows}; seeds {args.seeds}", flush=True)
        for seed in args.seeds:
            for row in args.rows:
                path = _cache_file(args.cache, args.simulations, args.epochs, row, seed)
                if _is_current(path, settings):
                    continue
                result = run_one(row, seed, args)
                result.update(settings=settings, commit=git_commit(),
                              machine=machine(args.device))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(result, indent=1))
                print(f"{row:12s} seed {seed}: " + ", ".join(
                    f"{k} {_fmt(result[k], 4)}" for k in METRICS)
                    + f", train {result['train_seconds']:.0f} s, eval "
                      f"{result['eval_seconds']:.0f} s", flush=True)
    folder = _cache_file(args.cache, args.simulations, args.epochs, "", 0).parent
    print("\nOurs (paper's in brackets), medians over seeds:\n" + table(folder))


if __name__ == "__main__":
    main()
