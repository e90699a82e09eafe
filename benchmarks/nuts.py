"""Benchmark: fixed-manifold NUTS posterior against the exact potential and sbi's own MCMC.

Measures, in one run, and writes JSON (git commit, machine, load, settings, numbers) to
``benchmarks/results/nuts_<simulator>.json``:

(a) cost of one potential + gradient evaluation (one θ, as in a NUTS leapfrog step) of the
    cached chart potential against the exact ``log_prob`` potential, for an untrained
    M-flow with ``outer_layers=20`` on d=40 data, n=14, 20 iid trials;
(b) ESS per second of ``sbi_mflow.manifold_posterior`` at its default sampler settings
    (Pyro NUTS, chart potential) against sbi's ``slice_np_vectorized`` MCMC on sbi's
    ``NLE`` with ``likelihood_nn("nsf")``, both trained on the same simulations and both run
    to completion: sbi's sampler is capped by its number of draws (``--sbi-samples``), not
    by wall time;
(c) C2ST of each posterior against the simulator's reference posterior;
(d) chain modes: ESS per second of ``chain_mode="product"`` and ``"independent"`` at 4, 8
    and 20 chains (``--mode-chains``), each for ``--mode-samples`` draws in total.

ESS is the smallest bulk ESS over θ's components (ArviZ); time is the wall time of the
sampling call, chain starts and warm-up included, and its CPU time (``time.process_time``,
all threads of this process): on a shared machine the wall time also counts other jobs,
the CPU time does not, so ratios are given for both. Command lines (one torch thread)::

    python -m benchmarks.nuts                                   # PolynomialSurface
    python -m benchmarks.nuts --simulator particle --simulations 5000 --epochs 20 \\
        --sbi-samples 300                                       # ParticleDecay (d=40)
    python -m benchmarks.nuts --report                          # Markdown from the JSON files
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path

import torch

import sbi_mflow
from sbi_mflow.sampling.potential import (
    ChartPotential,
    ExactLikelihoodPotential,
    frozen_copy,
)

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"


def _rule(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}", flush=True)


def machine() -> dict:
    """Where and under which load the numbers were measured."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average_1_5_15_min": list(os.getloadavg())}


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    return commit + ("+uncommitted" if git("status", "--porcelain", "--", "sbi_mflow",
                                            "benchmarks") else "")


def _time_calls(fn, min_calls: int, min_seconds: float) -> float:
    """Mean seconds per call over >= min_calls calls and >= min_seconds."""
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def potential_cost(args: argparse.Namespace) -> dict:
    """(a) chart vs exact potential + gradient, d=40, n=14, outer_layers=20, 20 trials."""
    from sbi.utils import BoxUniform

    _rule("(a) cost per potential + gradient: cached chart potential vs exact log_prob")
    d, n, p, trials = 40, 14, 3, 20
    torch.manual_seed(0)
    build = sbi_mflow.manifold_likelihood_nn("mflow", n, outer_layers=20)
    estimator = frozen_copy(build(torch.rand(1000, p) * 2 - 1, torch.randn(1000, d)))
    prior = BoxUniform(-torch.ones(p), torch.ones(p))
    x_o = torch.randn(trials, d)
    chart = ChartPotential(estimator, prior, x_o)
    exact = ExactLikelihoodPotential(estimator, prior, x_o)

    def value_and_grad(potential):
        def call():
            theta = torch.zeros(1, p, requires_grad=True)
            torch.autograd.grad(potential(theta).sum(), theta)
        return call

    theta = torch.rand(5, p) * 2 - 1
    with torch.no_grad():
        difference = chart(theta) - exact(theta)
    spread = float(difference.max() - difference.min())
    t_chart = _time_calls(value_and_grad(chart), 20, 2.0)
    t_exact = _time_calls(value_and_grad(exact), 2, 5.0)
    print(f"chart potential (x_o encoded once): {1e3 * t_chart:9.2f} ms per value+grad")
    print(f"exact log_prob potential:           {1e3 * t_exact:9.2f} ms per value+grad")
    print(f"speed-up (exact / chart):           {t_exact / t_chart:9.1f}x   (target >= 50x)")
    print(f"check: exact − chart is θ-independent (spread over 5 θ: {spread:.2e})")
    return {"chart_ms": 1e3 * t_chart, "exact_ms": 1e3 * t_exact, "ratio": t_exact / t_chart,
            "theta_independence_spread": spread,
            "model": f"untrained M-flow d={d} n={n} outer_layers=20 p={p}, {trials} trials"}


def _min_bulk_ess(chains) -> float:
    import arviz as az

    return float(az.ess(az.convert_to_dataset({"theta": chains}), method="bulk")["theta"].min())


def _max_rhat(chains) -> float:
    import arviz as az

    return float(az.rhat(az.convert_to_dataset({"theta": chains}))["theta"].max())


def train(simulator, args) -> tuple[dict, torch.Tensor, torch.Tensor, dict]:
    """M-flow and sbi's NSF on the same simulations; returns (models, x_o, x, seconds)."""
    from sbi.inference import NLE
    from sbi.neural_nets import likelihood_nn

    torch.manual_seed(args.seed)
    prior = simulator.prior
    theta = prior.sample((args.simulations,))
    x = simulator(theta)
    x_o = simulator(simulator.default_theta.expand(args.trials, simulator.param_dim))
    builders = {
        "mflow": sbi_mflow.manifold_likelihood_nn(
            "mflow", simulator.manifold_dim, outer_layers=args.outer_layers, inner_layers=3,
            hidden_features=32),
        "nsf": likelihood_nn("nsf"),
    }
    models, seconds = {}, {}
    for name, build in builders.items():
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inference = NLE(prior, density_estimator=build, show_progress_bars=False)
            estimator = inference.append_simulations(theta, x).train(
                max_num_epochs=args.epochs, training_batch_size=100)
        seconds[name] = time.perf_counter() - start
        models[name] = (inference, estimator)
        print(f"trained {name} in {seconds[name]:.1f} s", flush=True)
    return models, x_o, x, seconds


def sample_ours(estimator, prior, x_o, reference_x, num_samples: int, seed: int,
                **options) -> tuple[dict, torch.Tensor]:
    posterior = sbi_mflow.manifold_posterior(estimator, prior, reference_x=reference_x,
                                             check_convergence=False, **options)
    load = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    idata = posterior.sample_arviz(num_samples, x=x_o, seed=seed)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    chains = idata.posterior["theta"].values  # (C, N, p)
    result = posterior.chain_result
    ess = _min_bulk_ess(chains)
    config = posterior.config
    row = {
        "sampler": "pyro NUTS, M-flow chart potential (ours)",
        "chain_mode": config.chain_mode, "num_chains": config.num_chains,
        "draws_per_chain": int(chains.shape[1]), "warmup_steps": config.warmup_steps,
        "seconds": seconds, "cpu_seconds": cpu_seconds, "bulk_ess": ess,
        "ess_per_s": ess / seconds, "ess_per_cpu_s": ess / cpu_seconds,
        "rhat": _max_rhat(chains), "divergences": result.num_divergences,
        "leapfrog_steps_per_draw": float(idata.sample_stats["n_steps"].values.mean()),
        "batched_potential_calls": result.batched_calls, "load_1min_before": load,
    }
    flat = torch.as_tensor(chains).transpose(0, 1).reshape(-1, chains.shape[-1])
    return row, flat[:num_samples].float()


def sample_sbi(inference, x_o, num_samples: int, args) -> tuple[dict, torch.Tensor]:
    from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters

    torch.manual_seed(args.seed)
    parameters = MCMCPosteriorParameters(
        method="slice_np_vectorized", num_chains=args.sbi_chains,
        warmup_steps=args.sbi_warmup, thin=1, init_strategy="resample")
    posterior = inference.build_posterior(posterior_parameters=parameters)
    load = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    samples = posterior.sample((num_samples,), x=x_o, show_progress_bars=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    per_chain = math.ceil(num_samples / args.sbi_chains)
    chains = posterior.posterior_sampler.get_samples(num_samples=per_chain, group_by_chain=True)
    chains = posterior.theta_transform.inv(torch.as_tensor(chains, dtype=torch.float32)).numpy()
    ess = _min_bulk_ess(chains)
    row = {"sampler": "sbi slice_np_vectorized, NSF", "num_chains": args.sbi_chains,
           "draws_per_chain": per_chain, "warmup_steps": args.sbi_warmup, "seconds": seconds,
           "cpu_seconds": cpu_seconds, "bulk_ess": ess, "ess_per_s": ess / seconds,
           "ess_per_cpu_s": ess / cpu_seconds, "rhat": _max_rhat(chains),
           "load_1min_before": load}
    return row, samples.float()


def sampler_comparison(simulator, args, save=lambda partial: None) -> dict:
    """(b) ESS/s, (c) C2ST, (d) chain modes on trained models; ``save(partial)`` after
    each measurement, so a long run keeps what it has measured."""
    from sbi.utils.metrics import c2st

    _rule(f"(b)-(d) on {type(simulator).__name__} (d={simulator.data_dim}, "
          f"n={simulator.manifold_dim}, p={simulator.param_dim}), {args.simulations} "
          f"simulations, {args.trials} trials")
    models, x_o, x, train_seconds = train(simulator, args)
    prior = simulator.prior
    mflow = models["mflow"][1]
    reference = simulator.reference_posterior(x_o, max(args.samples, args.sbi_samples)).float()

    ours, ours_samples = sample_ours(mflow, prior, x_o, x[:1000], args.samples, args.seed)
    print(f"ours: {ours['seconds']:.1f} s, ESS {ours['bulk_ess']:.0f}, "
          f"ESS/s {ours['ess_per_s']:.2f}", flush=True)
    theirs, sbi_samples = sample_sbi(models["nsf"][0], x_o, args.sbi_samples, args)
    print(f"sbi:  {theirs['seconds']:.1f} s, ESS {theirs['bulk_ess']:.0f}, "
          f"ESS/s {theirs['ess_per_s']:.2f}", flush=True)
    count = min(len(ours_samples), len(sbi_samples))
    ours["c2st"] = float(c2st(ours_samples[:count], reference[:count]))
    theirs["c2st"] = float(c2st(sbi_samples[:count], reference[:count]))
    ratio = ours["ess_per_s"] / theirs["ess_per_s"]
    cpu_ratio = ours["ess_per_cpu_s"] / theirs["ess_per_cpu_s"]
    print(f"ESS/s ratio ours / sbi: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (target >= 10x); "
          f"C2ST ({count} draws) ours {ours['c2st']:.3f}, sbi {theirs['c2st']:.3f}", flush=True)

    modes = []
    partial = {"training_seconds": train_seconds, "ours": ours, "sbi": theirs,
               "ess_per_s_ratio": ratio, "ess_per_cpu_s_ratio": cpu_ratio, "c2st_draws": count,
               "chain_modes": modes}
    save(partial)
    for chain_mode in ("product", "independent"):
        for num_chains in args.mode_chains:
            row, _ = sample_ours(mflow, prior, x_o, x[:1000], args.mode_samples, args.seed,
                                 chain_mode=chain_mode, num_chains=num_chains)
            modes.append(row)
            save(partial)
            print(f"{chain_mode:11s} {num_chains:3d} chains: {row['seconds']:7.1f} s "
                  f"({row['cpu_seconds']:.1f} s CPU), ESS {row['bulk_ess']:6.0f}, ESS/CPU-s "
                  f"{row['ess_per_cpu_s']:7.2f}, R-hat "
                  f"{row['rhat']:.3f}, {row['leapfrog_steps_per_draw']:.1f} steps/draw",
                  flush=True)
    return partial


def markdown(result: dict) -> str:
    """docs/results.md tables from one JSON result."""
    b, host = result["sampling"], result["machine"]
    for row in (b["ours"], b["sbi"], *b["chain_modes"]):  # files written before CPU times
        row.setdefault("cpu_seconds", math.nan)
        row.setdefault("ess_per_cpu_s", math.nan)
    b.setdefault("ess_per_cpu_s_ratio", math.nan)
    lines = [
        f"`{result['simulator']}`, commit `{result['commit'][:10]}`, {host['cpu']} "
        f"({host['cores']} cores), load {host['load_average_1_5_15_min'][0]:.1f} at the start:",
        "",
        "| sampler | chains × draws (warm-up) | wall s | CPU s | bulk ESS | ESS/wall-s | "
        "ESS/CPU-s | R-hat | C2ST |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in (b["ours"], b["sbi"]):
        lines.append(
            f"| {row['sampler']} | {row['num_chains']} × {row['draws_per_chain']} "
            f"({row['warmup_steps']}) | {row['seconds']:.1f} | {row['cpu_seconds']:.1f} | "
            f"{row['bulk_ess']:.0f} | {row['ess_per_s']:.2f} | {row['ess_per_cpu_s']:.2f} | "
            f"{row['rhat']:.3f} | {row['c2st']:.3f} |")
    lines += ["", f"ESS/s ratio ours / sbi: **{b['ess_per_s_ratio']:.1f}×** wall time, "
              f"**{b['ess_per_cpu_s_ratio']:.1f}×** CPU time (target ≥ 10×).", "",
              "| chain mode | chains | draws per chain | wall s | CPU s | bulk ESS | ESS/wall-s "
              "| ESS/CPU-s | R-hat | steps/draw |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in b["chain_modes"]:
        lines.append(
            f"| {row['chain_mode']} | {row['num_chains']} | {row['draws_per_chain']} | "
            f"{row['seconds']:.1f} | {row['cpu_seconds']:.1f} | {row['bulk_ess']:.0f} | "
            f"{row['ess_per_s']:.2f} | {row['ess_per_cpu_s']:.2f} | {row['rhat']:.3f} | "
            f"{row['leapfrog_steps_per_draw']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "a", "bcd"], default="all")
    parser.add_argument("--simulator", choices=["polynomial", "particle"], default="polynomial")
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--outer-layers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--samples", type=int, default=2000, help="our draws (b)")
    parser.add_argument("--sbi-samples", type=int, default=None,
                        help="sbi's draws (b); default --samples")
    parser.add_argument("--sbi-chains", type=int, default=20)
    parser.add_argument("--sbi-warmup", type=int, default=100)
    parser.add_argument("--mode-chains", type=int, nargs="+", default=[4, 8, 20])
    parser.add_argument("--mode-samples", type=int, default=2000, help="draws in (d)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--report", action="store_true",
                        help="print Markdown tables from benchmarks/results/nuts_*.json")
    args = parser.parse_args(argv)
    if args.report:
        for path in sorted(RESULTS.glob("nuts_*.json")):
            print(f"\n<!-- {path.name} -->\n{markdown(json.loads(path.read_text()))}")
        return
    args.sbi_samples = args.sbi_samples or args.samples
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*triangular_solve.*")
    from simulators import ParticleDecay, PolynomialSurface

    simulator = PolynomialSurface() if args.simulator == "polynomial" else ParticleDecay()
    result = {"benchmark": "nuts", "simulator": type(simulator).__name__,
              "commit": git_commit(), "machine": machine(),
              "settings": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()}}
    print(f"torch {torch.__version__}, {args.threads} thread(s); {result['machine']}")
    start = time.perf_counter()
    output = args.output or RESULTS / f"nuts_{args.simulator}.json"
    output.parent.mkdir(parents=True, exist_ok=True)

    def save(sampling: dict | None = None) -> None:
        if sampling is not None:
            result["sampling"] = sampling
        result["total_seconds"] = time.perf_counter() - start
        result["load_average_at_end"] = list(os.getloadavg())
        output.write_text(json.dumps(result, indent=2) + "\n")

    if args.part in ("all", "a"):
        result["potential_cost"] = potential_cost(args)
        save()
    if args.part in ("all", "bcd"):
        sampler_comparison(simulator, args, save)
    save()
    if "sampling" in result:
        print("\n" + markdown(result))
    print(f"\ntotal {result['total_seconds']:.0f} s; wrote {output}")


if __name__ == "__main__":
    main()
