"""How good can Table 2's posterior be at this budget when the manifold is known exactly?

An M-flow's posterior depends on θ only through its inner density p̂(u|θ) on the learned
chart coordinates u (the volume term −½ log det JᵀJ does not depend on θ; paper Eq. 7), so
its posterior MMD² is bounded below by how well a conditional flow learns p(z|θ) from the
same simulations on the *true* chart. This benchmark measures that floor with the FOM preset:
``manifold_likelihood_nn("fom", chart=PolynomialSurface().manifold_chart())``, whose inner
flow is the M-flow's of ``paper_table2.py`` (as many couplings, as wide, as many bins) on
the true chart coordinates z = (z1, z2) (``simulator.chart(x)``), trained by sbi's ``NLE``
(or, ``--trainer sbi-mflow``, by our trainer: the density phase only, with its optimiser
settings) on x, 10⁴ simulations, then scored exactly like ``paper_table2.py``: the grid
posterior (the FOM's exact ``log_prob``) of the 20 observations at θ = 0 against the
reference, unbiased MMD² with the median-heuristic bandwidth. Per seed, also the spurious
θ-dependence of the learned log-likelihood on 2000 test points: the RMS over θ and points
of (log q̂(z|θ) − log p(z|θ)), each centred over the θ grid (q̂: the FOM's chart
log-likelihood; its volume term does not depend on θ).

Writes ``benchmarks/results/table2_oracle_chart.json``. Run:
``python -m benchmarks.oracle_chart [--trainer sbi-mflow] [--seeds 0 1 ...]``; with
``--trainer sbi-mflow`` it writes ``table2_oracle_chart_sbi_mflow_trainer.json``.
:func:`section` renders both for ``docs/benchmarks.md`` (``--report`` prints it).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import torch

from benchmarks._results import (
    describe_machine,
    load_result,
    machine,
    markdown_table,
    write_result,
)
from sbi_mflow import ManifoldNLE, manifold_likelihood_nn, metrics
from sbi_mflow.tracking import NullTracker
from simulators import PolynomialSurface
from simulators._posterior import grid_posterior

__all__ = ["THRESHOLD", "TRAINERS", "main", "run", "section"]

#: Observations at θ = 0 whose joint posterior is scored (as in ``paper_table2.py``).
OBSERVATIONS = 20
#: Optimiser settings of both trainers.
LEARNING_RATE, BATCH = 1e-3, 100
#: Posterior MMD² above which a seed counts as a failure (Table 2's per-seed target).
THRESHOLD = 0.05
#: Result file per ``--trainer``, and how the section names it.
TRAINERS = {
    "sbi": ("table2_oracle_chart",
            "sbi's `NLE.train` (Adam)"),
    "sbi-mflow": ("table2_oracle_chart_sbi_mflow_trainer",
                  "ours (`--trainer sbi-mflow`: `ManifoldNLE`'s density phase: AdamW, weight "
                  "decay, clipping, cosine schedule, the best validation epoch kept)"),
}


def _latent(simulator: PolynomialSurface, x: torch.Tensor) -> torch.Tensor:
    """True chart coordinates z (N, 2), float32."""
    z, _ = simulator.chart(x.double())
    return z.float()


def _centred_error(estimator, simulator, x: torch.Tensor, theta: torch.Tensor) -> float:
    """RMS of the learned minus the true log-likelihood, each centred over the θ grid."""
    z = _latent(simulator, x)
    n, m = z.shape[0], theta.shape[0]
    with torch.no_grad():
        learned = estimator.chart_log_prob(x.unsqueeze(1).expand(n, m, 3),
                                           condition=theta).double()
    true = torch.stack([simulator.latent_log_prob(z.double(), t.expand(n, 1).double())
                        for t in theta.double()], 1)  # (n, m) like ``learned``
    error = (learned - learned.mean(1, keepdim=True)) - (true - true.mean(1, keepdim=True))
    return float(error.pow(2).mean().sqrt())


def run(seed: int, args: argparse.Namespace) -> dict:
    from sbi.inference import NLE

    simulator = PolynomialSurface()
    torch.manual_seed(seed)  # the same training data as paper_table2.py's seed
    theta = simulator.prior.sample((args.simulations,))
    x = simulator(theta)
    torch.manual_seed(1000)
    x_test = simulator(simulator.default_theta.expand(1000, 1))
    x_obs = x_test[:OBSERVATIONS]
    torch.manual_seed(seed)
    build = manifold_likelihood_nn("fom", chart=simulator.manifold_chart(),
                                   inner_layers=args.layers,
                                   hidden_features=args.hidden_features, num_bins=args.bins)
    if args.trainer == "sbi":
        inference = NLE(simulator.prior, density_estimator=build, show_progress_bars=False)
    else:  # our trainer: the density phase only (the chart is exact), its optimiser settings
        inference = ManifoldNLE(simulator.prior, density_estimator=build,
                                show_progress_bars=False, tracker=NullTracker())
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = inference.append_simulations(theta, x).train(
            max_num_epochs=args.epochs, stop_after_epochs=args.stop_after_epochs,
            training_batch_size=BATCH, learning_rate=LEARNING_RATE)
    train_seconds = time.perf_counter() - started
    estimator.eval()

    @torch.no_grad()
    def log_lik(grid_theta: torch.Tensor) -> torch.Tensor:
        x = x_obs.unsqueeze(1).expand(OBSERVATIONS, grid_theta.shape[0], 3)
        return estimator.log_prob(x, condition=grid_theta.float()).double().sum(0)

    torch.manual_seed(2000)
    reference = simulator.reference_posterior(x_obs.double(), args.posterior_samples)
    low, high = -torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    posterior = grid_posterior(log_lik, low, high, args.posterior_samples, args.grid, chunk=50)
    torch.manual_seed(3000)
    x_check = simulator(simulator.prior.sample((2000,)))
    theta_grid = torch.linspace(-0.99, 0.99, 100).unsqueeze(1)
    return {
        "seed": seed,
        "posterior_mmd": metrics.mmd_squared(posterior, reference),
        "posterior_mean": float(posterior.mean()),
        "reference_mean": float(reference.mean()),
        "theta_dependence_error": _centred_error(estimator, simulator, x_check, theta_grid),
        "epochs_trained": inference.summary["epochs_trained"][-1],
        "train_seconds": train_seconds,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    values = [r["posterior_mmd"] for r in runs]
    return {"median_mmd": statistics.median(values), "worst_mmd": max(values),
            f"seeds_above_{THRESHOLD:g}": sum(v > THRESHOLD for v in values)}


def section() -> str:
    """Posterior MMD² per seed of FOM on the true chart of PolynomialSurface (the best an
    M-flow with the same inner flow can do at this budget), for each trainer."""
    records = {trainer: load_result(name) for trainer, (name, _) in TRAINERS.items()}
    records = {trainer: r for trainer, r in records.items() if r is not None}
    if not records:
        return ""
    rows, machines, errors, means, references = [], [], [], [], set()
    for trainer, record in records.items():
        runs = sorted(record["runs"], key=lambda r: r["seed"])
        summary = _summary(runs)
        values = [r["posterior_mmd"] for r in runs]
        rows.append([TRAINERS[trainer][1], " ".join(f"{v:.3f}" for v in values),
                     f"{summary['median_mmd']:.3f}", f"{summary['worst_mmd']:.3f}",
                     summary[f"seeds_above_{THRESHOLD:g}"],
                     f"{sum(r['train_seconds'] for r in runs):.0f}"])
        machines.append((trainer, describe_machine(record)))
        errors += [r["theta_dependence_error"] for r in runs]
        means += [r["posterior_mean"] for r in runs]
        references |= {round(r["reference_mean"], 6) for r in runs}
    settings = next(iter(records.values()))["settings"]
    machine_text = (machines[0][1] if len({m for _, m in machines}) == 1
                    else "; ".join(f"{t}: {m}" for t, m in machines))
    simulations = f"{settings['simulations']:,}".replace(",", "\u202f")
    learning_rate = settings.get("learning_rate", LEARNING_RATE)
    seeds = sorted({s for r in records.values() for s in r["settings"]["seeds"]})
    seed_text = (f"{seeds[0]}–{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1))
                 else ", ".join(map(str, seeds)))
    reference = (f"the reference posterior's {next(iter(references)):+.2f}"
                 if len(references) == 1 else "the reference posteriors' "
                 + ", ".join(f"{v:+.2f}" for v in sorted(references)))
    return (
        "## How good can the posterior be at this budget? The exact manifold as an oracle "
        "(`python -m benchmarks.oracle_chart [--trainer sbi-mflow]`)\n\n"
        "FOM, the flow on the *true* manifold "
        "(`manifold_likelihood_nn(\"fom\", chart=PolynomialSurface().manifold_chart())`), "
        f"trained on the same {simulations} simulations per seed as Table 2's rows, with an "
        f"inner flow of {settings['layers']} couplings, width {settings['hidden_features']} and "
        f"{settings['bins']} bins (learning rate {learning_rate:g}, "
        f"batch {settings.get('batch', BATCH)}, at most {settings['epochs']} epochs, early "
        f"stopping after {settings['stop_after_epochs']}), and scored like Table 2: the grid "
        f"posterior ({settings['grid']} points, {settings['posterior_samples']} draws) of the "
        f"{settings.get('observations', OBSERVATIONS)} observations against the reference, "
        "unbiased MMD². An M-flow's posterior depends on θ only through its inner density "
        "on the chart coordinates, so this is what a perfect chart gives with the same "
        "density estimator.\n\n"
        + markdown_table(["density training", f"posterior MMD² (seeds {seed_text})", "median",
                          "worst", f"seeds > {THRESHOLD:g}", "training s (all seeds)"], rows)
        + "\n\nThe learned log-likelihood's θ-dependence, centred over a θ grid, is off the "
        f"true one by {min(errors):.2f}–{max(errors):.2f} nats RMS per point, and the "
        f"posterior means range from {min(means):+.2f} to {max(means):+.2f} against "
        f"{reference}.\n\nMachine: {machine_text}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=60,
                        help="at most as many as paper_table2.py's density phase")
    parser.add_argument("--stop-after-epochs", type=int, default=20)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--hidden-features", type=int, default=64)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--trainer", choices=["sbi", "sbi-mflow"], default="sbi",
                        help="sbi's NLE.train, or ours (AdamW, weight decay 1e-4, clipping, "
                             "cosine schedule, the best validation epoch kept)")
    parser.add_argument("--posterior-samples", type=int, default=5000)
    parser.add_argument("--grid", type=int, default=400)
    parser.add_argument("--report", action="store_true", help="print section() and exit")
    args = parser.parse_args()
    if args.report:
        print(section(), end="")
        return
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        row = run(seed, args)
        runs.append(row)
        print(f"seed {seed}: MMD² {row['posterior_mmd']:.4f}, posterior mean "
              f"{row['posterior_mean']:+.3f} (reference {row['reference_mean']:+.3f}), "
              f"θ-dependence error {row['theta_dependence_error']:.3f} nats, "
              f"{row['epochs_trained']} epochs, {row['train_seconds']:.0f} s", flush=True)
    summary = _summary(runs)
    print(f"median MMD² {summary['median_mmd']:.4f}, worst {summary['worst_mmd']:.4f}, "
          f"seeds above {THRESHOLD:g}: {summary[f'seeds_above_{THRESHOLD:g}']} of {len(runs)}")
    settings = {k: v for k, v in vars(args).items() if k != "report"}
    settings.update(observations=OBSERVATIONS, learning_rate=LEARNING_RATE, batch=BATCH)
    write_result(TRAINERS[args.trainer][0], {"settings": settings, "machine": machine(),
                                             "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
