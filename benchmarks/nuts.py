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
import math
import os
import time
import warnings
from typing import Any

import torch

import sbi_mflow
from benchmarks._results import (
    describe_machine,
    load_result,
    machine,
    markdown_table,
    write_result,
)
from sbi_mflow.sampling.potential import (
    ChartPotential,
    ExactLikelihoodPotential,
    frozen_copy,
)

__all__ = ["main", "markdown", "section"]

#: The simulators of ``--simulator``; each run writes ``benchmarks/results/nuts_<name>.json``.
SIMULATORS = ("polynomial", "particle")
#: Targets the benchmark is read against: ESS/s ours ÷ sbi's, and exact ÷ chart potential cost.
ESS_RATIO_TARGET = 10.0
POTENTIAL_RATIO_TARGET = 50.0


def _rule(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}", flush=True)


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
    print(f"speed-up (exact / chart):           {t_exact / t_chart:9.1f}x   "
          f"(target >= {POTENTIAL_RATIO_TARGET:g}x)")
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
    print(f"ESS/s ratio ours / sbi: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU "
          f"(target >= {ESS_RATIO_TARGET:g}x); "
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


def _number(row: dict[str, Any], key: str, digits: int) -> str:
    """``row[key]`` to ``digits`` decimals, "–" where an older file lacks it."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _ratio_text(ratios: dict[str, float | None]) -> str:
    return ", ".join(f"**{value:.1f}×** in {clock} time" for clock, value in ratios.items()
                     if value is not None and not math.isnan(value))


def markdown(result: dict[str, Any]) -> str:
    """docs/benchmarks.md tables from one JSON result: (a) the potential's cost where it was
    measured, (b, c) our sampler against sbi's, (d) the chain modes."""
    parts = []
    cost = result.get("potential_cost")
    if cost:
        parts.append(
            f"Cost of one potential + gradient at one θ ({cost['model']}):\n\n"
            + markdown_table(["potential", "ms per value + gradient"],
                             [["chart (x_o encoded once)", f"{cost['chart_ms']:.2f}"],
                              ["exact `log_prob`", f"{cost['exact_ms']:.1f}"]])
            + f"\n\nExact ÷ chart: **{cost['ratio']:.1f}×** (target ≥ "
            f"{POTENTIAL_RATIO_TARGET:g}×: "
            f"{'met' if cost['ratio'] >= POTENTIAL_RATIO_TARGET else 'not met'}). "
            f"Exact − chart spreads by {cost['theta_independence_spread']:.1e} over the θ "
            "tested: the two potentials differ by a θ-independent constant.")
    sampling = result.get("sampling")
    if sampling:
        ours, theirs = sampling["ours"], sampling["sbi"]
        header = ["sampler", "chains × draws (warm-up)", "wall s", "CPU s", "bulk ESS",
                  "ESS/wall-s", "ESS/CPU-s", "R̂ max", f"C2ST ({sampling['c2st_draws']} draws)"]
        rows = [[row["sampler"], f"{row['num_chains']} × {row['draws_per_chain']} "
                 f"({row['warmup_steps']})", _number(row, "seconds", 1),
                 _number(row, "cpu_seconds", 1), _number(row, "bulk_ess", 0),
                 _number(row, "ess_per_s", 2), _number(row, "ess_per_cpu_s", 2),
                 _number(row, "rhat", 3), _number(row, "c2st", 3)] for row in (ours, theirs)]
        ratios = {"wall": sampling.get("ess_per_s_ratio"),
                  "CPU": sampling.get("ess_per_cpu_s_ratio")}
        measured = [v for v in ratios.values() if v is not None and not math.isnan(v)]
        verdict = "met" if min(measured) >= ESS_RATIO_TARGET else "not met"
        parts.append(markdown_table(header, rows) + "\n\nESS per second, ours ÷ sbi's: "
                     + _ratio_text(ratios)
                     + f" (target ≥ {ESS_RATIO_TARGET:g}×: {verdict}).")
        modes = sampling.get("chain_modes", [])
        if modes:
            header = ["chain mode", "chains", "draws per chain", "wall s", "CPU s", "bulk ESS",
                      "ESS/wall-s", "ESS/CPU-s", "R̂ max", "leapfrog steps/draw"]
            rows = [[row["chain_mode"], row["num_chains"], row["draws_per_chain"],
                     _number(row, "seconds", 1), _number(row, "cpu_seconds", 1),
                     _number(row, "bulk_ess", 0), _number(row, "ess_per_s", 2),
                     _number(row, "ess_per_cpu_s", 2), _number(row, "rhat", 3),
                     _number(row, "leapfrog_steps_per_draw", 1)] for row in modes]
            text = f"Chain modes, {modes[0]['num_chains'] * modes[0]['draws_per_chain']} " \
                   "draws in total each:\n\n" + markdown_table(header, rows)
            by_mode = {(row["chain_mode"], row["num_chains"]): row for row in modes}
            compared = []
            for (mode, chains), row in by_mode.items():
                other = by_mode.get(("independent", chains))
                if mode != "product" or other is None:
                    continue
                key = "ess_per_cpu_s" if _number(row, "ess_per_cpu_s", 2) != "–" \
                    and _number(other, "ess_per_cpu_s", 2) != "–" else "ess_per_s"
                ratio = row[key] / other[key]
                better, factor = ("product", ratio) if ratio >= 1 else ("independent", 1 / ratio)
                compared.append(f"{better} by {factor:.1f}× at {chains} chains")
            if compared:
                text += ("\n\nMore ESS per CPU second (per wall second where the CPU time "
                         "was not recorded): " + ", ".join(compared) + ".")
            parts.append(text)
    return "\n\n".join(parts)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "a", "bcd"], default="all")
    parser.add_argument("--simulator", choices=list(SIMULATORS), default="polynomial")
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
    parser.add_argument("--name", default=None,
                        help="result name under benchmarks/results/ (default nuts_SIMULATOR)")
    parser.add_argument("--report", action="store_true",
                        help="print the Markdown section from benchmarks/results/nuts_*.json")
    return parser


def command(settings: dict[str, Any]) -> str:
    """The command line of a run with these settings (its options that differ from the
    defaults)."""
    words = ["python -m benchmarks.nuts"]
    for action in _parser()._actions:
        if action.dest in ("help", "name", "report") or action.dest not in settings:
            continue
        value = settings[action.dest]
        if value == action.default or (action.dest == "sbi_samples"
                                       and value == settings.get("samples")):
            continue
        values = value if isinstance(value, list) else [value]
        words += [action.option_strings[-1], *map(str, values)]
    return " ".join(words)


def section() -> str:
    """The "Fixed-manifold NUTS" section of docs/benchmarks.md from
    ``benchmarks/results/nuts_<simulator>.json`` ("" when none is committed)."""
    results = [record for name in SIMULATORS
               if (record := load_result(f"nuts_{name}")) is not None]
    if not results:
        return ""
    text = (
        "## Fixed-manifold NUTS against sbi's MCMC (`python -m benchmarks.nuts`)\n\n"
        "Our posterior (`sbi_mflow.manifold_posterior`: Pyro NUTS on the M-flow's chart "
        "potential, x_o encoded once) against sbi's `slice_np_vectorized` MCMC on sbi's NLE "
        "with its NSF, both estimators trained on the same simulations and both samplers run "
        "to completion (sbi's capped by its number of draws, not by time). Bulk ESS is the "
        "smallest over θ's components (ArviZ); R̂ the largest. Times cover the whole sampling "
        "call, chain starts and warm-up included: wall time, and the CPU time of the "
        "benchmark process (all its threads), which other jobs on a shared machine do not "
        "inflate. C2ST compares each sampler's draws with the simulator's reference posterior "
        "(0.5: indistinguishable). The chain-mode table runs our sampler with its chains as "
        "one product-space state (`chain_mode=\"product\"`: one step size and trajectory "
        "shared, per-chain energies, acceptance and divergences) or as independent Pyro "
        "kernels with their own adaptation, their potentials evaluated in one batch per "
        "leapfrog round (`chain_mode=\"independent\"`).\n")
    for record in results:
        settings = record.get("settings", {})
        sampling = record.get("sampling", {})
        loads = [row["load_1min_before"] for row in
                 (sampling.get("ours"), sampling.get("sbi"), *sampling.get("chain_modes", []))
                 if row and "load_1min_before" in row]
        text += f"\n### {record['simulator']} (`{command(settings)}`)\n\n"
        if sampling:
            training = sampling.get("training_seconds", {})
            text += (
                f"{settings['simulations']} simulations, {settings['epochs']} training epochs "
                f"(M-flow with {settings['outer_layers']} outer layers), "
                f"{settings['trials']} iid trials at the simulator's default θ, seed "
                f"{settings['seed']}. Training took {training.get('mflow', math.nan):.0f} s "
                f"(M-flow) and {training.get('nsf', math.nan):.0f} s (NSF).")
            if loads:
                text += (f" One-minute load average before the sampling calls: "
                         f"{min(loads):.1f}–{max(loads):.1f}.")
            text += "\n\n"
        text += markdown(record) + f"\n\nMachine: {describe_machine(record)}.\n"
    return text


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.report:
        print(section(), end="")
        return
    args.sbi_samples = args.sbi_samples or args.samples
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*triangular_solve.*")
    from simulators import ParticleDecay, PolynomialSurface

    simulator = PolynomialSurface() if args.simulator == "polynomial" else ParticleDecay()
    result: dict[str, Any] = {"benchmark": "nuts", "simulator": type(simulator).__name__,
                              "machine": machine(), "settings": vars(args)}
    print(f"torch {torch.__version__}, {args.threads} thread(s); {result['machine']}")
    start = time.perf_counter()
    name = args.name or f"nuts_{args.simulator}"

    def save(sampling: dict | None = None) -> None:
        if sampling is not None:
            result["sampling"] = sampling
        result["total_seconds"] = time.perf_counter() - start
        result["load_average_at_end"] = list(os.getloadavg())
        write_result(name, result)

    if args.part in ("all", "a"):
        result["potential_cost"] = potential_cost(args)
        save()
    if args.part in ("all", "bcd"):
        sampler_comparison(simulator, args, save)
    save()
    if "sampling" in result or "potential_cost" in result:
        print("\n" + markdown(result))
    print(f"\ntotal {result['total_seconds']:.0f} s; wrote benchmarks/results/{name}.json")


if __name__ == "__main__":
    main()
