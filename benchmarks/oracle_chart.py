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

Until 0.2.0.dev3 the model was sbi's ``likelihood_nn("nsf")`` on z, built here by hand.

Writes ``benchmarks/results/table2_oracle_chart.json``. Run:
``python -m benchmarks.oracle_chart [--trainer sbi-mflow] [--seeds 0 1 ...]``; with
``--trainer sbi-mflow`` it writes ``table2_oracle_chart_sbi_mflow_trainer.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from benchmarks._results import machine, write_result
from sbi_mflow import ManifoldNLE, manifold_likelihood_nn, metrics
from sbi_mflow.tracking import NullTracker
from simulators import PolynomialSurface
from simulators._posterior import grid_posterior


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
    x_obs = x_test[:20]
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
            training_batch_size=100, learning_rate=1e-3)
    train_seconds = time.perf_counter() - started
    estimator.eval()

    @torch.no_grad()
    def log_lik(grid_theta: torch.Tensor) -> torch.Tensor:
        x = x_obs.unsqueeze(1).expand(20, grid_theta.shape[0], 3)
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        row = run(seed, args)
        runs.append(row)
        print(f"seed {seed}: MMD² {row['posterior_mmd']:.4f}, posterior mean "
              f"{row['posterior_mean']:+.3f} (reference {row['reference_mean']:+.3f}), "
              f"θ-dependence error {row['theta_dependence_error']:.3f} nats, "
              f"{row['epochs_trained']} epochs, {row['train_seconds']:.0f} s", flush=True)
    values = [r["posterior_mmd"] for r in runs]
    summary = {"median_mmd": statistics.median(values), "worst_mmd": max(values),
               "seeds_above_0.05": sum(v > 0.05 for v in values)}
    print(f"median MMD² {summary['median_mmd']:.4f}, worst {summary['worst_mmd']:.4f}, "
          f"seeds above 0.05: {summary['seeds_above_0.05']} of {len(values)}")
    name = "table2_oracle_chart" + ("" if args.trainer == "sbi" else "_sbi_mflow_trainer")
    write_result(name, {"settings": vars(args), "machine": machine(),
                                         "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
