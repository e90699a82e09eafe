"""Benchmark: the paper's Table 3 (particle physics) on ``ParticleDecay``, with its ratio
baselines.

Rows (every model trained on the same simulations, with the simulator's joint scores):

* AF: sbi's NSF likelihood through ``ManifoldNLE``; PIE (original: θ-dependent manifold) and
  PIE (unconditional manifold); M-flow; Me-flow — each without and with SCANDAL
  (``train(scandal_weight=α)``);
* NRE: sbi's NRE-C; ALICES: :class:`sbi_mflow.ScoreAugmentedNRE` (NRE-C plus the joint score's
  regression, weight α).

Metrics (the paper's three, plus C2ST):

* closure (:func:`sbi_mflow.metrics.closure`): samples x ~ p̂(x|θ_k) against simulations at
  the same θ_k, on the scale 0 = indistinguishable, 1 = product of the marginals (generative
  rows only);
* reconstruction error: mean ‖x − g(g⁻¹(x))‖ on 1000 fresh simulations (manifold rows);
* log posterior at the true θ (Gaussian KDE of the draws), mean over ``--observations``
  (10) synthetic observations of ``--trials`` (20) iid events each, θ_k drawn from the
  prior; and C2ST of the draws against the simulator's reference posterior.

Posteriors: ``sample_batched`` of the library's NUTS posterior over all observations in one
run (the chart potential for the fixed-manifold rows, the exact likelihood for AF and
PIE (original), ``RatioLikelihood`` for the ratio rows). ``--chain-mode independent`` gives
every chain its own step size and mass matrix (the same target posterior; the JSON records
the mode).

A trained manifold row is saved (``sbi_mflow.save``) under ``benchmarks/.cache/table3/``
(git-ignored) before its posterior is sampled, with the settings it was trained with; a rerun
with the same settings and version loads it instead of training again.

Each (row, seed) writes ``benchmarks/results/table3/<budget>/<row>-seed<seed>.json`` as soon as
it is done, with sbi-mflow's version and the settings; a rerun skips the results measured with
the settings asked for and a version since the last change to their row (``CURRENT_SINCE``),
and redoes the others. Commands (one torch thread)::

    python -m benchmarks.paper_table3                # 10^5 simulations (hours per row on CPU)
    python -m benchmarks.paper_table3 --simulations 1000 --rows mflow alices   # a quick look
    python -m benchmarks.paper_table3 --report
"""

from __future__ import annotations

import argparse
import json
import math
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
from sbi_mflow.metrics import c2st, closure, log_posterior_at_true_theta, mean_reconstruction_error
from sbi_mflow.tracking import NullTracker
from simulators import ParticleDecay

OUT = RESULTS / "table3"
MODELS = Path(__file__).resolve().parent / ".cache" / "table3"

#: row -> (label, model, SCANDAL); model "af" is sbi's NSF, "nre"/"alices" the ratio rows.
ROWS = {
    "af": ("AF", "af", False),
    "af-scandal": ("AF (SCANDAL)", "af", True),
    "pie-original": ("PIE (original)", "pie-conditional", False),
    "pie-original-scandal": ("PIE (original, SCANDAL)", "pie-conditional", True),
    "pie": ("PIE (uncond. manifold)", "pie", False),
    "pie-scandal": ("PIE (uncond. manifold, SCANDAL)", "pie", True),
    "mflow": ("M-flow", "mflow", False),
    "mflow-scandal": ("M-flow (SCANDAL)", "mflow", True),
    "meflow": ("Me-flow", "meflow", False),
    "meflow-scandal": ("Me-flow (SCANDAL)", "meflow", True),
    "nre": ("NRE-C (sbi)", "nre", False),
    "alices": ("ALICES (NRE-C + joint score)", "nre", True),
}


#: The sbi-mflow version since which every row gives the results it gives now (CHANGELOG.md):
#: 0.2.0.dev5 pooled the NUTS mass matrix differently (every row's posterior) and trained the
#: density phase to early stopping (the manifold rows). An earlier result is stale: shown
#: apart and left out of the orderings.
CURRENT_SINCE = {row: "0.2.0.dev5" for row in ROWS}

#: Settings that change a result (the rest say where and how it ran).
RESULT_SETTINGS = ("simulations", "epochs", "scandal_weight", "observations", "trials",
                   "draws", "closure_samples", "warmup")

#: Settings that change a trained model.
TRAINING_SETTINGS = ("simulations", "epochs", "scandal_weight", "seed", "compile")


def is_stale(result: dict) -> bool:
    """Whether ``result`` is of a version before the last change to its row."""
    return is_older(result.get("version"), CURRENT_SINCE.get(result["row"]))


def is_current(path: Path, args: argparse.Namespace) -> bool:
    """Whether ``path`` holds a result that is not stale and was measured with the
    settings ``args`` ask for."""
    if not path.exists():
        return False
    result = json.loads(path.read_text())
    stored = result.get("settings", {})
    return not is_stale(result) and all(stored.get(key) == getattr(args, key)
                                        for key in RESULT_SETTINGS)


def observations(simulator: ParticleDecay, num: int, trials: int):
    """θ_k from the prior and x_k (trials, d), seeded per observation."""
    thetas, xs = [], []
    for k in range(num):
        torch.manual_seed(50_000 + k)
        theta = simulator.prior.sample((1,))
        thetas.append(theta[0])
        xs.append(simulator(theta.expand(trials, -1)))
    return torch.stack(thetas), torch.stack(xs)


def train(row: str, simulator, theta, x, score, args):
    """The trained estimator of a row and its posterior (a NUTSPosterior)."""
    _, model, scandal = ROWS[row]
    alpha = args.scandal_weight if scandal else 0.0
    torch.manual_seed(args.seed)
    if model == "nre":
        inference = sbi_mflow.ScoreAugmentedNRE(simulator.prior, score_weight=alpha,
                                                show_progress_bars=False)
        ratio = inference.append_simulations(theta, x, score=score).train(
            max_num_epochs=args.epochs)
        return None, sbi_mflow.nuts_posterior(sbi_mflow.RatioLikelihood(ratio),
                                              simulator.prior, warmup_steps=args.warmup)
    if model == "af":
        from sbi.neural_nets import likelihood_nn

        build = likelihood_nn("nsf")
    else:
        build = sbi_mflow.manifold_likelihood_nn(model, simulator.manifold_dim)
    inference = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=build,
                                      show_progress_bars=False, tracker=NullTracker())
    estimator = inference.append_simulations(theta, x, score=score).train(
        scandal_weight=alpha, max_num_epochs=args.epochs, compile=args.compile)
    return estimator, inference.build_posterior(**_nuts_options(args))


def _nuts_options(args) -> dict:
    """The run's NUTS settings (``NUTSConfig`` fields)."""
    return {"warmup_steps": args.warmup, "chain_mode": args.chain_mode}


def _model_files(row: str, args) -> tuple[Path, Path]:
    folder = MODELS / f"n{args.simulations}-e{args.epochs}"
    return folder / f"{row}-seed{args.seed}.pt", folder / f"{row}-seed{args.seed}.json"


def _training_record(args, train_seconds: float | None = None) -> dict:
    record = {key: getattr(args, key) for key in TRAINING_SETTINGS}
    record["version"] = sbi_mflow.__version__
    if train_seconds is not None:
        record["train_seconds"] = train_seconds
    return record


def cached_model(row: str, simulator, args):
    """``(estimator, posterior, train_seconds)`` of a saved model trained with the settings
    ``args`` ask for, else None."""
    model_file, record_file = _model_files(row, args)
    if not (model_file.exists() and record_file.exists()):
        return None
    record = json.loads(record_file.read_text())
    if any(record.get(key) != value for key, value in _training_record(args).items()):
        return None
    estimator = sbi_mflow.load(model_file)
    inference = sbi_mflow.ManifoldNLE(simulator.prior, show_progress_bars=False,
                                      tracker=NullTracker())
    posterior = inference.build_posterior(density_estimator=estimator, **_nuts_options(args))
    return estimator, posterior, record["train_seconds"]


def save_model(row: str, estimator, args, train_seconds: float) -> None:
    """Save a trained manifold row's estimator and the settings it was trained with."""
    if not isinstance(estimator, sbi_mflow.ManifoldFlowEstimator):
        return
    model_file, record_file = _model_files(row, args)
    model_file.parent.mkdir(parents=True, exist_ok=True)
    sbi_mflow.save(estimator, model_file)
    record_file.write_text(json.dumps(_training_record(args, train_seconds), indent=1) + "\n")


def evaluate(row: str, estimator, posterior, simulator, args) -> dict:
    thetas, xs = observations(simulator, args.observations, args.trials)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        draws = posterior.sample_batched((args.draws,), x=xs)  # (S, B, p)
    sample_seconds = time.perf_counter() - start
    result = {"sample_seconds": sample_seconds, "log_posterior": [], "c2st": []}
    for k in range(args.observations):
        result["log_posterior"].append(log_posterior_at_true_theta(thetas[k], draws[:, k]))
        torch.manual_seed(60_000 + k)
        reference = simulator.reference_posterior(xs[k].double(), args.draws).float()
        result["c2st"].append(c2st(draws[:, k].float(), reference))
    if estimator is not None:
        estimator.eval()
        torch.manual_seed(70_000)
        per_theta = args.closure_samples // args.observations
        with torch.no_grad():
            generated = estimator.sample((per_theta,), condition=thetas).reshape(
                -1, simulator.data_dim)
        simulated = simulator(thetas.repeat_interleave(2 * per_theta, dim=0))
        result["closure"] = closure(generated, simulated)
        if ROWS[row][1] != "af":
            torch.manual_seed(80_000)
            theta_test = simulator.prior.sample((1000,))
            x_test = simulator(theta_test)
            condition = theta_test if ROWS[row][1] == "pie-conditional" else None
            result["reconstruction_error"] = (
                statistics.fmean(mean_reconstruction_error(x_test[i:i + 1], estimator,
                                                           condition=condition[i])
                                 for i in range(len(x_test)))
                if condition is not None else mean_reconstruction_error(x_test, estimator))
    return result


def run_one(row: str, seed: int, args) -> dict:
    simulator = ParticleDecay()
    torch.manual_seed(seed)
    theta = simulator.prior.sample((args.simulations,))
    x, score = simulator.simulate_with_score(theta)
    cached = cached_model(row, simulator, args)
    if cached is not None:
        estimator, posterior, train_seconds = cached
    else:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator, posterior = train(row, simulator, theta, x, score, args)
        train_seconds = time.perf_counter() - start
        save_model(row, estimator, args, train_seconds)
    result = evaluate(row, estimator, posterior, simulator, args)
    return {"row": row, "seed": seed, "train_seconds": train_seconds, **result}


#: The paper's Table 3 (LHC simulator, 10^6 simulations; mean of ≥ 5 runs without the best
#: and worst): closure, reconstruction error, log posterior at the true θ. Our ParticleDecay
#: is a stand-in with the same d = 40 and θ ∈ R³ (a 10-dimensional manifold, the paper's 14),
#: so the columns compare orderings, not values.
PAPER = {
    "af": (0.0019, None, -3.94), "af-scandal": (0.0565, None, -0.40),
    "pie-original": (0.0023, 2.054, -4.68), "pie-original-scandal": (0.1293, 3.090, 0.03),
    "pie": (0.0022, 1.681, -1.82), "pie-scandal": (0.1019, 1.751, 0.23),
    "mflow": (0.0045, 0.012, -1.71), "mflow-scandal": (0.0371, 0.011, 0.11),
    "meflow": (0.0046, 0.029, -1.44), "meflow-scandal": (0.0291, 0.030, 0.14),
    "nre": (None, None, None), "alices": (None, None, 0.05),
}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _summary(runs: list[dict]) -> dict:
    """Means over seeds of a row's metrics (log posterior and C2ST: mean over observations
    first), and the median over observations of the log posterior's per-observation means
    over seeds (one observation whose posterior misses θ entirely sets the mean)."""
    summary = {
        "closure": _mean(r.get("closure") for r in runs),
        "reconstruction_error": _mean(r.get("reconstruction_error") for r in runs),
        "log_posterior": _mean(statistics.fmean(r["log_posterior"]) for r in runs),
        "per_observation": [statistics.fmean(values)
                            for values in zip(*(r["log_posterior"] for r in runs),
                                              strict=True)],
        "c2st": _mean(statistics.fmean(r["c2st"]) for r in runs),
        "train_seconds": _mean(r["train_seconds"] for r in runs),
        "sample_seconds": _mean(r["sample_seconds"] for r in runs),
    }
    summary["median_log_posterior"] = statistics.median(summary["per_observation"])
    return summary


#: The paper's orderings of the mean log posterior at the true θ (its Table 3 and §4), each
#: (row above, row below): the M-flows and the unconditional-manifold PIE above AF, and AF
#: above the original PIE; the M-flows above that PIE; SCANDAL above plain training; the
#: SCANDAL M-flows at or above the ratio estimator (ALICES) and above AF with SCANDAL. Then
#: orderings the paper does not have: both SCANDAL M-flows above sbi's NRE, and ALICES above
#: NRE (the joint score helps a ratio estimator too).
PAPER_ORDERINGS = (
    ("pie", "af"), ("mflow", "af"), ("meflow", "af"), ("af", "pie-original"),
    ("mflow", "pie"), ("meflow", "pie"),
    *((f"{a}-scandal", a) for a in ("af", "pie-original", "pie", "mflow", "meflow")),
    ("mflow-scandal", "alices"), ("meflow-scandal", "alices"),
    ("mflow-scandal", "af-scandal"), ("meflow-scandal", "af-scandal"),
)
OUR_ORDERINGS = (("mflow-scandal", "nre"), ("meflow-scandal", "nre"), ("alices", "nre"))


def _paired_error(a: list[float], b: list[float]) -> float | None:
    """Standard error of the mean of a − b over observations: every row is scored on the
    same observations (seeded apart from the training seed), so the differences pair."""
    if len(a) != len(b) or len(a) < 2:
        return None
    differences = [x - y for x, y in zip(a, b, strict=True)]
    return statistics.stdev(differences) / math.sqrt(len(differences))


def _verdicts(summaries: dict[str, dict], orderings) -> tuple[list[str], list[str]]:
    """Whether row a's mean log posterior at the true θ is above row b's, for each (a, b)
    of ``orderings`` with both rows run ("yes"/"no", or "unresolved" when the difference is
    within two standard errors of the paired difference), with the standard error and both
    rows' C2ST against the reference posterior; and the orderings not checkable yet."""
    lines, unchecked = [], []
    for a, b in orderings:
        if a not in summaries or b not in summaries:
            unchecked.append(f"{ROWS[a][0]} above {ROWS[b][0]}")
            continue
        sa, sb = summaries[a], summaries[b]
        log_a, log_b = sa["log_posterior"], sb["log_posterior"]
        difference = log_a - log_b
        error = _paired_error(sa["per_observation"], sb["per_observation"])
        answer = "yes" if difference > 0 else "no"
        if error is not None and abs(difference) < 2 * error:
            answer = "unresolved"
        spread = "" if error is None else f" ± {error:.2f}"
        lines.append(f"- {ROWS[a][0]} above {ROWS[b][0]}: {answer} ({log_a:.2f} against "
                     f"{log_b:.2f}, {difference:+.2f}{spread}; C2ST {_fmt(sa['c2st'])} "
                     f"against {_fmt(sb['c2st'])}).")
    return lines, unchecked


def _row_cells(label: str, row: str, runs: list[dict], summary: dict) -> list:
    closure, reconstruction, log_post = PAPER[row]
    versions = sorted({r.get("version", "–") for r in runs})
    return [label, len(runs),
            f"{_fmt(summary['closure'], 4)} ({_fmt(closure, 4)})",
            f"{_fmt(summary['reconstruction_error'], 4)} ({_fmt(reconstruction, 3)})",
            f"{_fmt(summary['log_posterior'], 2)} ({_fmt(log_post, 2)})",
            _fmt(summary["median_log_posterior"], 2),
            _fmt(summary["c2st"]), _fmt(summary["train_seconds"], 0),
            _fmt(summary["sample_seconds"], 0),
            ", ".join(sorted({r.get("settings", {}).get("chain_mode", "product") for r in runs})),
            ", ".join(versions), machines_of(runs)]


def table(folder: Path) -> str:
    """Our means over seeds beside the paper's (in brackets), the times and versions, stale
    results in rows of their own; then the paper's orderings of the log posterior checked
    on the current rows."""
    rows, stale_rows, summaries, devices = [], [], {}, set()
    for row, (label, _, _) in ROWS.items():
        runs = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{row}-seed*.json"))]
        devices.update(describe_machine(r) for r in runs)
        current = [r for r in runs if not is_stale(r)]
        stale = [r for r in runs if is_stale(r)]
        if current:
            summaries[row] = _summary(current)
            rows.append(_row_cells(label, row, current, summaries[row]))
        if stale:
            stale_rows.append(_row_cells(f"{label} (stale)", row, stale, _summary(stale)))
    text = markdown_table(["model", "seeds", "closure", "reconstruction error",
                           "mean log posterior at true θ", "median over observations",
                           "mean C2ST", "train s",
                           "sample s", "NUTS chains", "version", "machine"],
                          rows + stale_rows)
    for title, orderings in (
            ("The paper's orderings of the mean log posterior at the true θ, on ours",
             PAPER_ORDERINGS),
            ("Orderings not in the paper (NRE is not one of its rows)", OUR_ORDERINGS)):
        verdicts, unchecked = _verdicts(summaries, orderings)
        if verdicts:
            text += f"\n\n{title}:\n\n" + "\n".join(verdicts)
        if unchecked:
            text += ("\n\nNot checked yet (a row without a current result): "
                     + "; ".join(unchecked) + ".")
    return text + "\n\nMachines: " + "; ".join(sorted(devices)) + "."


def section() -> str:
    """One table per (simulations, epochs) folder that has results."""
    folders = sorted((p for p in OUT.glob("n*-e*") if any(p.glob("*.json"))),
                     key=lambda p: tuple(int(part[1:]) for part in p.name.split("-")))
    if not folders:
        return ""
    return (
        "## The paper's Table 3 on ParticleDecay (`python -m benchmarks.paper_table3`)\n\n"
        "Means over seeds; the paper's Table 3 in brackets. The paper's numbers are for its "
        "LHC simulator at 10⁶ simulations; ParticleDecay is a stand-in with the same data "
        "and parameter dimensions (x ∈ R⁴⁰, θ ∈ R³; its manifold is 10-dimensional, the "
        "paper's 14), so compare the orderings of rows, not the values. Closure: a "
        "classifier's distinguishability of model samples from simulations at the same θ "
        "(0: indistinguishable, 1: the product of the marginals). "
        "Log posterior: at the true θ, by a Gaussian KDE of the posterior draws, mean over the "
        "observations (each of several iid events), and its median over the observations (the "
        "mean is the paper's metric; one observation whose posterior misses the true θ "
        "sets it); in the orderings, ± is the standard error "
        "of the difference of two rows, paired over the observations (every row is scored on "
        "the same ones), and a difference within two standard errors is unresolved. C2ST: "
        "against the simulator's reference posterior. NUTS chains: product (the library's "
        "default: all chains of all observations in one state, one step size) or independent "
        "(each chain adapts its own; the same target posterior). A row marked stale ran "
        "with a version before the last change to it (CHANGELOG.md) and is left out of the "
        "orderings.\n\n"
        + "\n\n".join(f"Budget {folder.name} (simulations, epochs):\n\n{table(folder)}"
                       for folder in folders) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--scandal-weight", type=float, default=2.0)
    parser.add_argument("--observations", type=int, default=10)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--closure-samples", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=sbi_mflow.NUTSConfig.warmup_steps,
                        help="NUTS warm-up per chain (the library's default)")
    parser.add_argument("--chain-mode", choices=["product", "independent"], default="product",
                        help="NUTS chains in one product state (shared step size, the "
                        "library's default) or each with its own adaptation")
    parser.add_argument("--compile", choices=["true", "false", "auto"], default="true",
                        help="torch.compile the flows' training step: true, false or auto (CUDA "
                        "only). Default true: on the CPU a compiled epoch is 1.5-2x faster, "
                        "which runs of hours pay back; SCANDAL rows train eagerly (their loss "
                        "needs double backward)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    args.compile = {"true": True, "false": False, "auto": "auto"}[args.compile]
    torch.set_num_threads(args.threads)
    folder = args.out / f"n{args.simulations}-e{args.epochs}"
    if not args.report:
        for seed in args.seeds:
            for row in args.rows:
                path = folder / f"{row}-seed{seed}.json"
                if is_current(path, args):
                    continue
                args.seed = seed
                result = run_one(row, seed, args)
                result.update(commit=git_commit(), version=sbi_mflow.__version__,
                              machine=machine(),
                              settings={k: str(v) if isinstance(v, Path) else v
                                        for k, v in vars(args).items()})
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(result, indent=1) + "\n")
                print(f"{row} seed {seed}: closure {result.get('closure')}, log posterior "
                      f"{statistics.fmean(result['log_posterior']):.2f}, C2ST "
                      f"{statistics.fmean(result['c2st']):.3f}, train "
                      f"{result['train_seconds']:.0f} s", flush=True)
    print(table(folder))


if __name__ == "__main__":
    main()
