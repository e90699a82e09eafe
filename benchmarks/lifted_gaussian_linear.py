"""Benchmark: sbibm's gaussian_linear (θ, x ∈ R^10) lifted onto a 10-manifold in R^64.

The task (sbibm 1.1.0, re-implemented in torch): θ ~ N(0, 0.1 I_10), x ~ N(θ, 0.1 I_10).
x is lifted by the fixed smooth injective map φ of ``benchmarks/_sbibm.py`` (R^10 → R^64,
centre 0, scale 0.45 ≈ the marginal standard deviation of x); posteriors given lifted
observations equal the original ones, so sbibm's reference posterior samples stay exact.

Compared on sbibm's observations 1–5, by C2ST (sbi's MLP classifier, 5 folds) and unbiased
MMD² (Gaussian kernel, median-heuristic bandwidth on the reference) of ``--samples``
posterior draws against as many reference draws:

1. M-flow (ours), manifold_dim 10, on the lifted data: ``ManifoldNLE`` with library defaults
   (sequential M/D, tangent alignment, candidate initialisations) and its NUTS posterior;
2. sbi's ``NLE`` with ``likelihood_nn("nsf")`` on the original 10-D data, sbi's default MCMC
   (``slice_np_vectorized``), capped at ``--samples`` draws;
3. FOM (``--methods fom``): the M-flow's inner flow on the lift's true chart
   (``Lift.manifold_chart()``), on the lifted data; the density phase has as many epochs as
   the M-flow's (half of ``--epochs``; no manifold phase) and the same NUTS posterior.

Also the held-out RMS reconstruction error of the M-flow per coordinate in units of each
coordinate's standard deviation, √((1/D) E‖(y − y') / σ_y‖²) (FOM: rounding only). Issue
targets: RMS ≤ 0.03 and, on every observation, C2ST(M-flow) ≤ C2ST(sbi NLE, unlifted) + 0.05.
Writes ``benchmarks/results/lifted_gaussian_linear.json`` (the default methods ``mflow,nle``),
else ``lifted_gaussian_linear_<methods>.json`` (e.g. ``_fom``).

Run: ``python -m benchmarks.lifted_gaussian_linear [--simulations 10000] [--methods fom]
[--quick]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import sbi_mflow
from benchmarks._results import machine, write_result
from benchmarks._sbibm import Lift, load_task_files
from sbi_mflow.tracking import NullTracker
from sbi_mflow.training import TrainConfig

METHODS = ("mflow", "nle", "fom")

DIM, LIFT_DIM, LIFT_SEED = 10, 64, 20261128


def prior() -> torch.distributions.Distribution:
    return torch.distributions.MultivariateNormal(torch.zeros(DIM), 0.1 * torch.eye(DIM))


def simulator(theta: torch.Tensor) -> torch.Tensor:
    return theta + 0.1**0.5 * torch.randn_like(theta)


def run_manifold(args, theta, y, observations, model: str = "mflow", chart=None) -> dict:
    """M-flow (``chart=None``) or FOM on ``chart``: train on the lifted data, NUTS posterior."""
    torch.manual_seed(args.seed)
    build = sbi_mflow.manifold_likelihood_nn(model, DIM, chart=chart,
                                             outer_layers=args.outer_layers,
                                             hidden_features=args.hidden_features)
    inference = sbi_mflow.ManifoldNLE(prior(), density_estimator=build,
                                      show_progress_bars=False, tracker=NullTracker())
    # A prescribed chart trains only its density: as many epochs as the M-flow's density
    # phase (the sequential schedule's default), so the two inner flows get the same budget.
    options = {} if chart is None else dict(
        density_epochs=TrainConfig(max_num_epochs=args.epochs).manifold_epochs)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", sbi_mflow.ManifoldStallWarning)
        estimator = inference.append_simulations(theta, y).train(max_num_epochs=args.epochs,
                                                                 **options)
    train_time = time.perf_counter() - start
    held_out = y[inference.val_indices]
    with torch.no_grad():
        error = (held_out - estimator.project(held_out)) / y.std(0)
    rms = float(error.pow(2).mean().sqrt())
    print(f"{model} trained in {train_time:.0f} s; held-out RMS reconstruction {rms:.4f} σ per "
          f"coordinate; stall warnings {len(caught)}", flush=True)
    posterior = inference.build_posterior()
    samples, notes, sample_time = [], [], 0.0
    for k, y_o in enumerate(observations):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught_k:
            warnings.simplefilter("always")
            samples.append(posterior.sample((args.samples,), x=y_o, seed=args.seed + k))
        sample_time += time.perf_counter() - start
        notes.append([str(w.message).splitlines()[0] for w in caught_k
                      if not issubclass(w.category, (FutureWarning, DeprecationWarning))])
    return dict(train_time=train_time, sample_time=sample_time, samples=samples,
                reconstruction_rms=rms, notes=notes,
                manifold_check=inference.summary.get("manifold_check"),
                epochs_trained=inference.summary["epochs_trained"][-1], **options)


def run_sbi_nle(args, theta, x, observations) -> dict:
    from sbi.inference import NLE
    from sbi.neural_nets import likelihood_nn

    torch.manual_seed(args.seed)
    inference = NLE(prior(), density_estimator=likelihood_nn("nsf"), show_progress_bars=False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        inference.append_simulations(theta, x).train()
    train_time = time.perf_counter() - start
    posterior = inference.build_posterior()
    samples, sample_time = [], 0.0
    for x_o in observations:
        start = time.perf_counter()
        samples.append(posterior.sample((args.samples,), x=x_o, show_progress_bars=False))
        sample_time += time.perf_counter() - start
    return dict(train_time=train_time, sample_time=sample_time, samples=samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=10000)
    parser.add_argument("--observations", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=50, help="M-flow max_num_epochs")
    parser.add_argument("--outer-layers", type=int, default=5)
    parser.add_argument("--hidden-features", type=int,
                        default=sbi_mflow.ManifoldFlowConfig.hidden_features,
                        help="width of the M-flow's conditioner nets (library default)")
    parser.add_argument("--methods", default="mflow,nle",
                        help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke run")
    args = parser.parse_args()
    methods = sorted(set(args.methods.split(",")))
    if not methods or set(methods) - set(METHODS):
        parser.error(f"--methods: comma-separated, of {', '.join(METHODS)}")
    if args.quick:
        args.simulations, args.observations, args.samples, args.epochs = 1000, 1, 100, 4
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    lift = Lift(DIM, LIFT_DIM, LIFT_SEED, scale=0.45)
    observations, references = [], []
    for k in range(1, args.observations + 1):
        x_o, reference = load_task_files("gaussian_linear", k)
        observations.append(x_o)
        index = torch.randperm(reference.shape[0],
                               generator=torch.Generator().manual_seed(k))[: args.samples]
        references.append(reference[index])
    torch.manual_seed(args.seed)
    theta = prior().sample((args.simulations,))
    x = simulator(theta)
    y = lift(x)
    results = {}
    lifted_observations = [lift(x_o) for x_o in observations]
    if "mflow" in methods:
        results["mflow"] = run_manifold(args, theta, y, lifted_observations)
    if "nle" in methods:
        results["sbi_nle_unlifted"] = run_sbi_nle(args, theta, x, observations)
    if "fom" in methods:
        results["fom"] = run_manifold(args, theta, y, lifted_observations, "fom",
                                      chart=lift.manifold_chart())
    for name, result in results.items():
        samples = result.pop("samples")
        result["c2st"] = [float(sbi_mflow.metrics.c2st(s.float(), r, seed=args.seed))
                          for s, r in zip(samples, references, strict=True)]
        result["mmd2"] = [sbi_mflow.metrics.mmd_squared(s.double(), r.double())
                          for s, r in zip(samples, references, strict=True)]
        print(f"{name}: C2ST {[round(c, 3) for c in result['c2st']]}, MMD² "
              f"{[round(m, 4) for m in result['mmd2']]}, training "
              f"{result['train_time']:.0f} s, sampling {result['sample_time']:.0f} s",
              flush=True)
    if "sbi_nle_unlifted" in results:
        for key, label in (("mflow", "M-flow"), ("fom", "FOM")):
            if key not in results:
                continue
            margins = [m - n for m, n in zip(results[key]["c2st"],
                                             results["sbi_nle_unlifted"]["c2st"], strict=True)]
            print(f"C2ST({label}) − C2ST(sbi NLE, unlifted) per observation: "
                  f"{[round(m, 3) for m in margins]} (target ≤ 0.05 each)")
            results["margins" if key == "mflow" else f"margins_{key}"] = margins
    name = "lifted_gaussian_linear" + (
        "" if methods == ["mflow", "nle"] else "_" + "_".join(methods))
    if args.hidden_features != sbi_mflow.ManifoldFlowConfig.hidden_features:
        name += f"_hidden{args.hidden_features}"
    path = write_result(name + ("_quick" if args.quick else ""),
                        {"settings": vars(args), "machine": machine(), "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
