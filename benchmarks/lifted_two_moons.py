"""Benchmark: sbibm's two-moons task lifted into R^32, M-flow NLE against sbi's NSF NLE.

The task (sbibm 1.1.0, ``sbibm/tasks/two_moons/task.py``, re-implemented here in torch):
prior θ ~ U[-1, 1]^2; a ~ U(-π/2, π/2), r ~ N(0.1, 0.01²), p = (r cos a + 0.25, r sin a);

    x = p + (−|θ0 + θ1| / √2, (−θ0 + θ1) / √2)  ∈ R^2.

The lift. A fixed (seeded, θ-independent) smooth map φ: R^2 → R^32,

    φ(x) = Q [x; ψ(x)],  ψ(x) = tanh(W x + b) ∈ R^30,

with Q a random 32×32 rotation (QR of a seeded Gaussian matrix, signs fixed) and W, b seeded
Gaussians. φ is injective (its first two coordinates after Qᵀ are x itself, so
x = [Qᵀ y]_{1:2} inverts it) and an immersion, so y = φ(x) lies on a 2-D submanifold
M = φ(R^2) of R^32. The density of y w.r.t. M's volume measure is

    p_M(y | θ) = p(x | θ) / sqrt(det(J_φ(x)ᵀ J_φ(x))),  x = φ⁻¹(y),

and the Jacobian factor does not depend on θ. Hence for every observation
p(θ | y_o) ∝ π(θ) p_M(y_o | θ) ∝ π(θ) p(x_o | θ) = p(θ | x_o): the posterior is exactly the
original one, and sbibm's published reference posterior samples remain exact. Observations
are sbibm's ``num_observation_k`` x_o, lifted with φ.

Compared, at ``--simulations`` (default 10^4) simulations, on the first ``--observations``
(default 5) sbibm observations, by C2ST (sbi's ``c2st``, MLP classifier as in sbibm, 5
folds) of ``--samples`` posterior draws against as many reference draws (subsampled):

1. M-flow (ours), manifold_dim 2, on the lifted data: ``sbi_mflow.ManifoldNLE``, sequential
   M/D schedule, posterior by Pyro NUTS on the cached chart potential;
2. sbi's ``NLE`` with ``likelihood_nn("nsf")`` on the same lifted data, ``slice_np_vectorized``;
3. sbi's ``NLE`` with ``likelihood_nn("nsf")`` on the original 2-D data, same sampler.

Observations and reference samples are read from the ``sbibm==1.1.0`` wheel (downloaded
once with ``pip download --no-deps`` into ``$SBI_MFLOW_CACHE``, else ``~/.cache/sbi-mflow``);
sbibm's code is never imported (it pins an old sbi).

The two-moons posterior is bimodal (the likelihood is invariant under the reflection
(θ0, θ1) ↦ (−θ1, −θ0)). NUTS chains do not jump between the modes, so the mode weights of
the M-flow posterior are the shares of chains that start in each mode. The posterior starts
its chains by sorted systematic sampling-importance-resampling from ``--init-candidates``
prior draws (``sbi_mflow.sampling.init``), which gives each mode its share of the
importance mass ±1 chain, and uses 20 chains by default, so the shares are multiples of
1/20 close to the modes' masses. The report gives the fraction of draws in the θ0 + θ1 > 0
mode (reference ≈ 0.5), R̂ over all chains (large when chains sit in different modes: the
posterior's ``ModeDisagreementWarning`` says so) and R̂ of the folded draws (within-mode
mixing). Targets (issue 15): mode share within 0.4–0.6 on each observation, mean C2ST
<= 0.56.

Command lines (one torch thread; on the shared 2-core box prefix ``nice -n 5``)::

    python -m benchmarks.lifted_two_moons --quick   # smoke run, ~3 min; writes
                                                    # benchmarks/results/lifted_two_moons_quick.md
    python -m benchmarks.lifted_two_moons           # full run, ~40 min on the shared box; writes
                                                    # benchmarks/results/lifted_two_moons.md

Budget choices of the defaults (measured on the shared 2-core box): the M-flow posterior is
a thin curved crescent per mode, so NUTS needs many gradient evaluations per draw, hence
500 draws per observation (the sampler's defaults: 20 chains × 25 draws, 200 warm-up
each) instead of 2000; sbi's NSF is capped at 100 epochs (on the lifted data it has not converged
by then, ~450 s). The M-flow uses the default permutation layers
(``--linear-layer lu`` for LU layers). Before the coupling-stack fix of 3e5b546 permutations
did not find the rotated manifold (held-out reconstruction error 0.45, against 0.007 with LU
layers); after it they reach 0.0073 (data scale ‖std(y)‖ ≈ 2.4).

Earlier target: M-flow mean C2ST <= 0.70 (sbibm's published NLE on the 2-D data at 10^4
simulations: about 0.64 to 0.71).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path

import torch

import sbi_mflow
from benchmarks._sbibm import load_task_files
from benchmarks.tasks import two_moons, two_moons_lift

LIFT_DIM = 32



# ------------------------------------------------------------------------------- methods
def _folded(theta: torch.Tensor) -> torch.Tensor:
    """Map draws to the θ0 + θ1 >= 0 mode by the likelihood's reflection (θ0,θ1) ↦ (−θ1,−θ0)."""
    flip = (theta[..., 0] + theta[..., 1]) < 0
    mirrored = torch.stack([-theta[..., 1], -theta[..., 0]], dim=-1)
    return torch.where(flip.unsqueeze(-1), mirrored, theta)


def _rhat(chains: torch.Tensor) -> float:
    import arviz as az

    return float(az.rhat(az.convert_to_dataset({"theta": chains.numpy()}))["theta"].max())


def run_mflow(args, prior, theta, y, observations) -> dict:
    """M-flow via ManifoldNLE (sequential M/D) and Pyro NUTS on the chart potential."""
    options = dict(outer_layers=args.outer_layers, linear_layer=args.linear_layer)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    inference = sbi_mflow.ManifoldNLE(
        prior, density_estimator=sbi_mflow.manifold_likelihood_nn("mflow", 2, **options),
        show_progress_bars=False,
    )
    estimator = inference.append_simulations(theta, y).train(
        schedule="sequential", max_num_epochs=args.epochs, density_epochs=args.density_epochs,
        training_batch_size=args.batch_size,
    )
    train_time = time.perf_counter() - start
    held_out = y[inference.val_indices]
    reco = sbi_mflow.metrics.mean_reconstruction_error(held_out, estimator)
    scale = float(held_out.std(0).norm())
    phases = inference.summary["phases"]
    epochs = {name: sum(1 for e in phases if e.get("phase") == name)
              for name in ("manifold", "density")}
    print(f"M-flow trained in {train_time:.1f} s ({len(phases)} epochs {epochs}); held-out "
          f"reconstruction error {reco:.4f} (data scale ‖std(y)‖ = {scale:.3f})", flush=True)

    posterior = inference.build_posterior(
        num_chains=args.chains, warmup_steps=args.warmup, max_tree_depth=args.max_tree_depth,
        num_init_candidates=args.init_candidates,
    )
    result = dict(train_time=train_time, sample_time=0.0, samples=[], notes=[],
                  held_out_reconstruction_error=reco, data_scale=scale,
                  manifold_check=inference.summary.get("manifold_check"))
    for k, y_o in enumerate(observations):
        torch.manual_seed(args.seed + k)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            idata = posterior.sample_arviz(args.samples, x=y_o, seed=args.seed + k)
        result["sample_time"] += time.perf_counter() - start
        chains = torch.as_tensor(idata.posterior["theta"].values)  # (C, N, 2)
        flat = chains.transpose(0, 1).reshape(-1, 2)[: args.samples]
        result["samples"].append(flat.float())
        upper = float(((chains[..., 0] + chains[..., 1]) > 0).float().mean())
        result.setdefault("mode_shares", []).append(upper)
        divergences = int(idata.sample_stats["diverging"].values.sum())
        result["notes"].append(
            f"obs {k + 1}: R-hat {_rhat(chains):.2f} (folded {_rhat(_folded(chains)):.3f}), "
            f"{divergences} divergences, fraction in θ0+θ1>0 mode {upper:.2f}, "
            f"{len(caught)} warning(s) "
            f"({', '.join(sorted({w.category.__name__ for w in caught})) or 'none'})"
        )
        for warning in caught:
            if not issubclass(warning.category, (FutureWarning, DeprecationWarning)):
                print(f"  [M-flow obs {k + 1}] {warning.category.__name__}: "
                      f"{str(warning.message).splitlines()[0]}")
        print(f"M-flow {result['notes'][-1]}", flush=True)
    return result


def run_sbi_nsf(args, prior, theta, x, observations, label: str) -> dict:
    """sbi's NLE with likelihood_nn("nsf"), sampled with slice_np_vectorized."""
    from sbi.inference import NLE
    from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters
    from sbi.neural_nets import likelihood_nn

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    inference = NLE(prior, density_estimator=likelihood_nn("nsf"), show_progress_bars=False)
    train_options = dict(training_batch_size=args.sbi_batch_size)
    if args.sbi_epochs:
        train_options["max_num_epochs"] = args.sbi_epochs
    inference.append_simulations(theta, x).train(**train_options)
    train_time = time.perf_counter() - start
    epochs = inference.summary["epochs_trained"][-1]
    print(f"{label} trained in {train_time:.1f} s ({epochs} epochs)", flush=True)
    parameters = MCMCPosteriorParameters(
        method="slice_np_vectorized", num_chains=args.sbi_chains,
        warmup_steps=args.sbi_warmup, thin=1, init_strategy="resample",
    )
    posterior = inference.build_posterior(posterior_parameters=parameters)
    result = dict(train_time=train_time, sample_time=0.0, samples=[], notes=[])
    for k, x_o in enumerate(observations):
        torch.manual_seed(args.seed + k)
        start = time.perf_counter()
        samples = posterior.sample((args.samples,), x=x_o, show_progress_bars=False)
        result["sample_time"] += time.perf_counter() - start
        upper = float(((samples[:, 0] + samples[:, 1]) > 0).float().mean())
        result.setdefault("mode_shares", []).append(upper)
        result["samples"].append(samples.float())
        result["notes"].append(f"obs {k + 1}: fraction in θ0+θ1>0 mode {upper:.2f}")
    return result


# ------------------------------------------------------------------------------- report
def markdown_table(results: dict, num_obs: int) -> str:
    head = ["method"] + [f"obs {k + 1}" for k in range(num_obs)] + [
        "mean C2ST", "training s", "sampling s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (
        len(head) - 1)) + "|"]
    for name, r in results.items():
        cells = [name] + [f"{c:.3f}" for c in r["c2st"]] + [
            f"**{sum(r['c2st']) / len(r['c2st']):.3f}**", f"{r['train_time']:.0f}",
            f"{r['sample_time']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, default=10000)
    parser.add_argument("--observations", type=int, default=5, help="first k of sbibm's 10")
    parser.add_argument("--samples", type=int, default=500, help="posterior draws per obs.")
    parser.add_argument("--epochs", type=int, default=40,
                        help="M-flow max_num_epochs (sequential: half of them manifold phase)")
    parser.add_argument("--density-epochs", type=int, default=30,
                        help="M-flow density-phase epochs (cheap: cached 2-D encodings)")
    parser.add_argument("--outer-layers", type=int, default=5)
    parser.add_argument("--linear-layer", choices=["permutation", "lu"], default="permutation")
    parser.add_argument("--batch-size", type=int, default=100, help="M-flow training batch")
    defaults = sbi_mflow.NUTSConfig()
    parser.add_argument("--chains", type=int, default=defaults.num_chains,
                        help="M-flow NUTS chains (sampler default)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup_steps,
                        help="M-flow NUTS warm-up per chain (sampler default)")
    parser.add_argument("--max-tree-depth", type=int, default=defaults.max_tree_depth,
                        help="M-flow NUTS (sampler default)")
    parser.add_argument("--init-candidates", type=int, default=defaults.num_init_candidates,
                        help="prior draws screened for the chains' starts (sampler default)")
    parser.add_argument("--sbi-epochs", type=int, default=100,
                        help="cap of sbi's NSF epochs (0: sbi's early stopping only)")
    parser.add_argument("--sbi-batch-size", type=int, default=200, help="sbi's default")
    parser.add_argument("--sbi-chains", type=int, default=20)
    parser.add_argument("--sbi-warmup", type=int, default=50)
    parser.add_argument("--classifier", choices=["mlp", "rf"], default="mlp",
                        help="C2ST classifier (sbibm uses an MLP)")
    parser.add_argument("--methods", default="mflow,nsf-lifted,nsf-2d")
    parser.add_argument("--output", type=Path, default=None,
                        help="Markdown report (default benchmarks/results/lifted_two_moons.md, "
                             "or lifted_two_moons_quick.md with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.simulations, args.observations, args.samples = 1000, 2, 100
        args.epochs, args.density_epochs, args.sbi_epochs = 4, 4, 5
        args.chains, args.warmup, args.max_tree_depth = 2, 20, 5
        args.sbi_chains, args.sbi_warmup = 10, 10
    if args.output is None:
        name = "lifted_two_moons_quick.md" if args.quick else "lifted_two_moons.md"
        args.output = Path(__file__).resolve().parent / "results" / name
    if not 1 <= args.observations <= 10:
        parser.error("--observations must be in 1..10 (sbibm has 10).")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*triangular_solve.*")
    from sbi.utils import BoxUniform

    total = time.perf_counter()
    print(f"torch {torch.__version__}, {args.threads} thread(s); {args.simulations} "
          f"simulations, {args.observations} observations, {args.samples} draws each")
    lift = two_moons_lift()
    observations, references = [], []
    for k in range(1, args.observations + 1):
        x_o, reference = load_task_files("two_moons", k)
        observations.append(x_o)
        generator = torch.Generator().manual_seed(k)
        index = torch.randperm(reference.shape[0], generator=generator)[: args.samples]
        references.append(reference[index])
    lifted_obs = [lift(x_o) for x_o in observations]
    assert all(torch.allclose(lift.inverse(y), x, atol=1e-6)
               for y, x in zip(lifted_obs, observations, strict=True))

    torch.manual_seed(args.seed)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((args.simulations,))
    x = two_moons(theta)
    y = lift(x)
    print(f"lifted data: y in R^{y.shape[1]}, per-coordinate std {y.std(0).min():.3f} .. "
          f"{y.std(0).max():.3f}", flush=True)

    methods = args.methods.split(",")
    results = {}
    if "mflow" in methods:
        results["M-flow, n=2 (ours), lifted R^32, NUTS"] = run_mflow(
            args, prior, theta, y, lifted_obs)
    if "nsf-lifted" in methods:
        results["NSF NLE (sbi), lifted R^32, slice"] = run_sbi_nsf(
            args, prior, theta, y, lifted_obs, "NSF (lifted)")
    if "nsf-2d" in methods:
        results["NSF NLE (sbi), original R^2, slice"] = run_sbi_nsf(
            args, prior, theta, x, observations, "NSF (2-D)")

    start = time.perf_counter()
    for r in results.values():
        r["c2st"] = [
            sbi_mflow.metrics.c2st(s, ref, seed=args.seed, classifier=args.classifier)
            for s, ref in zip(r["samples"], references, strict=True)
        ]
    c2st_time = time.perf_counter() - start

    table = markdown_table(results, args.observations)
    settings = (
        f"{args.simulations} simulations (seed {args.seed}), sbibm two_moons observations "
        f"1..{args.observations}, {args.samples} posterior vs {args.samples} reference draws, "
        f"C2ST classifier {args.classifier} (5 folds). M-flow: outer_layers "
        f"{args.outer_layers}, linear_layer {args.linear_layer}, sequential schedule, "
        f"max_num_epochs {args.epochs}, density_epochs {args.density_epochs}, batch "
        f"{args.batch_size}; NUTS {args.chains} chains, {args.warmup} warm-up each, max tree depth "
        f"{args.max_tree_depth}. sbi NSF: max_num_epochs "
        f"{args.sbi_epochs or 'unlimited'} (sbi's early stopping, patience 20), batch "
        f"{args.sbi_batch_size}; slice_np_vectorized {args.sbi_chains} chains, {args.sbi_warmup} "
        f"warm-up, init resample. {args.threads} torch thread(s)."
    )
    notes = [f"- {name}: {note}" for name, r in results.items() for note in r["notes"]]
    targets = ""
    mflow = results.get("M-flow, n=2 (ours), lifted R^32, NUTS")
    if mflow is not None:
        shares_ok = all(0.4 <= share <= 0.6 for share in mflow["mode_shares"])
        mean_c2st = sum(mflow["c2st"]) / len(mflow["c2st"])
        targets = (f"Targets (issue 15): mode share within 0.4–0.6 on every observation: "
                   f"{'met' if shares_ok else 'missed'} "
                   f"({', '.join(f'{v:.2f}' for v in mflow['mode_shares'])}); mean C2ST "
                   f"<= 0.56: {'met' if mean_c2st <= 0.56 else 'missed'} ({mean_c2st:.3f}).")
    machine = {"cpu": platform.processor(), "cores": os.cpu_count(),
               "load_average_1_5_15_min_at_end": list(os.getloadavg())}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    report = (f"# Lifted two moons (R^2 → R^{LIFT_DIM})\n\n{table}\n\n{settings}\n\n"
              f"C2ST: 0.5 = indistinguishable from sbibm's reference posterior. {targets}\n\n"
              f"Commit {commit[:10]}; {machine['cores']} cores, load average at the end "
              f"{machine['load_average_1_5_15_min_at_end']}.\n\nDiagnostics:\n\n"
              + "\n".join(notes) + "\n")
    print("\n" + table + "\n\n" + settings + "\n\n" + targets + "\n\n" + "\n".join(notes))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    record = {
        "benchmark": "lifted_two_moons", "commit": commit, "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": {name: {k: v for k, v in r.items() if k != "samples"}
                    for name, r in results.items()},
        "c2st_seconds": c2st_time, "total_seconds": time.perf_counter() - total,
    }
    args.output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nC2ST {c2st_time:.0f} s; total {time.perf_counter() - total:.0f} s; "
          f"table written to {args.output} (and .json)")


if __name__ == "__main__":
    main()
