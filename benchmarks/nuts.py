"""Benchmark: fixed-manifold NUTS posterior against the exact potential and sbi's own MCMC.

Prints, in one run:

(a) cost of one potential + gradient evaluation (one θ, as in a NUTS leapfrog step) of the
    cached chart potential against the exact ``log_prob`` potential, for an untrained
    M-flow with ``outer_layers=20`` on d=40 data, n=14, 20 iid trials;
(b) ESS per second of ``sbi_mflow.manifold_posterior`` (Pyro NUTS, chart potential) against
    sbi's ``slice_np_vectorized`` MCMC on sbi's ``NLE`` with ``likelihood_nn("nsf")``, both
    trained on the same simulations;
(c) C2ST of each posterior against the simulator's reference posterior.

Defaults run in a few minutes on 2 CPU cores::

    python benchmarks/nuts.py                      # PolynomialSurface, 2000 simulations
    python benchmarks/nuts.py --simulations 10000 --epochs 100 --samples 4000   # bigger

Timings use ``--threads`` torch threads (default 1: on the shared 2-core development box one
thread was much faster than two for these small batches, for every method).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sbi_mflow  # noqa: E402
from sbi_mflow.posterior import manifold_posterior  # noqa: E402
from sbi_mflow.potential import ChartPotential, ExactLikelihoodPotential, frozen_copy  # noqa: E402


def _rule(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}", flush=True)


def _time_calls(fn, min_calls: int, min_seconds: float) -> float:
    """Median-free simple timing: mean seconds per call over >= min_calls and min_seconds."""
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def potential_cost(args: argparse.Namespace) -> None:
    """(a) chart vs exact potential + gradient, d=40, n=14, outer_layers=20, 20 trials."""
    from sbi.utils import BoxUniform

    _rule("(a) cost per potential + gradient: cached chart potential vs exact log_prob")
    d, n, p, trials = 40, 14, 3, 20
    torch.manual_seed(0)
    batch_theta = torch.rand(1000, p) * 2 - 1
    batch_x = torch.randn(1000, d)
    build = sbi_mflow.manifold_likelihood_nn("mflow", n, outer_layers=20)
    estimator = frozen_copy(build(batch_theta, batch_x))
    prior = BoxUniform(-torch.ones(p), torch.ones(p))
    x_o = torch.randn(trials, d)
    chart = ChartPotential(estimator, prior, x_o)
    exact = ExactLikelihoodPotential(estimator, prior, x_o)

    def value_and_grad(potential):
        def call():
            theta = torch.zeros(1, p, requires_grad=True)
            value = potential(theta)
            torch.autograd.grad(value.sum(), theta)
        return call

    theta = torch.rand(5, p) * 2 - 1
    with torch.no_grad():
        difference = chart(theta) - exact(theta)
    spread = float(difference.max() - difference.min())
    t_chart = _time_calls(value_and_grad(chart), 20, 2.0)
    t_exact = _time_calls(value_and_grad(exact), 2, 5.0)
    print(f"model: untrained M-flow, d={d}, n={n}, outer_layers=20, inner_layers=5, "
          f"p={p}, {trials} trials, one θ per call")
    print(f"chart potential (x_o encoded once): {1e3 * t_chart:9.2f} ms per value+grad")
    print(f"exact log_prob potential:           {1e3 * t_exact:9.2f} ms per value+grad")
    print(f"speed-up (exact / chart):           {t_exact / t_chart:9.1f}x   (target >= 50x)")
    print(f"check: exact − chart is θ-independent (spread over 5 θ: {spread:.2e})")


def _ess_per_chain_array(samples) -> float:
    import arviz as az

    return float(az.ess(az.convert_to_dataset({"theta": samples}), method="bulk")["theta"].min())


def sampler_comparison(args: argparse.Namespace) -> None:
    """(b) ESS/s and (c) C2ST vs reference posterior, on a trained model."""
    import arviz as az
    from sbi.inference import NLE
    from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters
    from sbi.neural_nets import likelihood_nn
    from sbi.utils.metrics import c2st

    from simulators import ParticleDecay, PolynomialSurface

    simulator = PolynomialSurface() if args.simulator == "polynomial" else ParticleDecay()
    manifold_dim = simulator.manifold_dim
    _rule(f"(b) ESS per second and (c) C2ST on {type(simulator).__name__} "
          f"(d={simulator.data_dim}, n={manifold_dim}, p={simulator.param_dim})")
    torch.manual_seed(args.seed)
    prior = simulator.prior
    theta = prior.sample((args.simulations,))
    x = simulator(theta)
    x_o = simulator(simulator.default_theta.expand(args.trials, simulator.param_dim))
    print(f"{args.simulations} simulations, {args.epochs} max epochs; x_o: {args.trials} iid "
          f"trials at θ = {simulator.default_theta.tolist()}", flush=True)

    estimators = {}
    builders = {
        "M-flow (ours)": sbi_mflow.manifold_likelihood_nn(
            "mflow", manifold_dim, outer_layers=args.outer_layers, inner_layers=3,
            hidden_features=32,
        ),
        "NSF (sbi)": likelihood_nn("nsf"),
    }
    for name, build in builders.items():
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inference = NLE(prior, density_estimator=build, show_progress_bars=False)
            estimator = inference.append_simulations(theta, x).train(
                max_num_epochs=args.epochs, training_batch_size=100
            )
        estimators[name] = (inference, estimator)
        print(f"trained {name:14s} in {time.perf_counter() - start:6.1f} s", flush=True)

    reference = simulator.reference_posterior(x_o, args.samples).float()
    results = {}

    # ours: Pyro NUTS on the chart potential
    torch.manual_seed(args.seed)
    _, mflow = estimators["M-flow (ours)"]
    posterior = manifold_posterior(
        mflow, prior, num_chains=args.chains, warmup_steps=args.warmup, reference_x=x[:1000],
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idata = posterior.sample_arviz(args.samples, x=x_o, seed=args.seed)
    elapsed = time.perf_counter() - start
    ess = float(az.ess(idata, method="bulk")["theta"].min())
    samples = torch.as_tensor(idata.posterior["theta"].values).reshape(-1, simulator.param_dim)
    results["NUTS, M-flow chart potential (ours)"] = dict(
        time=elapsed, ess=ess, c2st=float(c2st(samples[: args.samples].float(), reference)),
        rhat=float(az.rhat(idata)["theta"].max()),
        note=f"{args.chains} chains x {math.ceil(args.samples / args.chains)} draws, "
             f"{args.warmup} warm-up, "
             f"{int(idata.sample_stats['diverging'].sum())} divergences",
    )
    for warning in caught:
        print(f"  [ours] warning: {warning.message}")
    print(f"sampled ours in {elapsed:.1f} s (bulk ESS {ess:.0f})", flush=True)

    # sbi: slice_np_vectorized on NSF
    torch.manual_seed(args.seed)
    inference, _ = estimators["NSF (sbi)"]
    parameters = MCMCPosteriorParameters(
        method="slice_np_vectorized", num_chains=args.sbi_chains,
        warmup_steps=args.sbi_warmup, thin=1, init_strategy="resample",
    )
    sbi_posterior = inference.build_posterior(posterior_parameters=parameters)
    start = time.perf_counter()
    sbi_samples = sbi_posterior.sample((args.samples,), x=x_o, show_progress_bars=False)
    elapsed = time.perf_counter() - start
    per_chain = math.ceil(args.samples / args.sbi_chains)
    chains = sbi_posterior.posterior_sampler.get_samples(
        num_samples=per_chain, group_by_chain=True
    )
    chains = sbi_posterior.theta_transform.inv(torch.as_tensor(chains, dtype=torch.float32))
    ess = _ess_per_chain_array(chains.numpy())
    print(f"sampled sbi in {elapsed:.1f} s (bulk ESS {ess:.0f})", flush=True)
    results["slice_np_vectorized, NSF (sbi)"] = dict(
        time=elapsed, ess=ess, c2st=float(c2st(sbi_samples.float(), reference)),
        rhat=float(az.rhat(az.convert_to_dataset({"theta": chains.numpy()}))["theta"].max()),
        note=f"{args.sbi_chains} chains x {per_chain} draws, {args.sbi_warmup} warm-up",
    )

    print(f"\n{'sampler':36s} {'time s':>8s} {'bulk ESS':>9s} {'ESS/s':>8s} {'R-hat':>6s} "
          f"{'C2ST':>6s}  settings")
    for name, r in results.items():
        print(f"{name:36s} {r['time']:8.1f} {r['ess']:9.0f} {r['ess'] / r['time']:8.1f} "
              f"{r['rhat']:6.3f} {r['c2st']:6.3f}  {r['note']}")
    ours, theirs = results.values()
    ratio = (ours["ess"] / ours["time"]) / (theirs["ess"] / theirs["time"])
    print(f"\n(b) ESS/s ratio ours / sbi: {ratio:.2f}x   (target >= 5x)")
    print(f"(c) C2ST vs reference posterior ({args.samples} draws each; 0.5 = "
          f"indistinguishable): ours {ours['c2st']:.3f}, sbi {theirs['c2st']:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "a", "bc"], default="all")
    parser.add_argument("--simulator", choices=["polynomial", "particle"], default="polynomial")
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--outer-layers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--sbi-chains", type=int, default=20)
    parser.add_argument("--sbi-warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*triangular_solve.*")
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    start = time.perf_counter()
    if args.part in ("all", "a"):
        potential_cost(args)
    if args.part in ("all", "bc"):
        sampler_comparison(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
