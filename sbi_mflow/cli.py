"""``sbi-mflow``: demo, train and infer from the command line.

* ``sbi-mflow demo``: the whole pipeline on ``PolynomialSurface`` (simulate, M/D training,
  NUTS posterior for 20 trials at the default θ, comparison with the reference posterior).
* ``sbi-mflow train``: train on a named simulator or on θ/x(/score) files (.npy or .pt).
* ``sbi-mflow infer``: sample the posterior of a trained model for observations x_o.
* ``sbi-mflow simulate``: fill a Zarr store on a Dask cluster; ``train --store`` reads it.
* ``sbi-mflow dimension``: estimate the manifold dimension n of a simulator's or a file's x.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import sbi_mflow
from sbi_mflow import metrics
from sbi_mflow.cli_dimension import add_dimension_command, run_dimension
from sbi_mflow.cli_simulate import add_simulate_command, run_simulate, training_data_from_store
from sbi_mflow.config import ManifoldFlowConfig
from sbi_mflow.pipeline import (
    SIMULATORS,
    CommandError,
    box_prior_metadata,
    load_array,
    make_simulator,
    prepare_output,
    prior_from_run,
    simulate,
    train_model,
    write_json,
)
from sbi_mflow.plots import plot_manifold, plot_posterior, plot_trace, plot_training
from sbi_mflow.sampling.config import NUTSConfig
from sbi_mflow.training.config import DENSITY_EPOCHS_FACTOR, MANIFOLD_RATE_FACTOR

__all__ = ["main"]


def _training(args: argparse.Namespace) -> dict[str, Any]:
    return {"density_epochs": args.density_epochs, "learning_rate": args.learning_rate,
            "manifold_learning_rate": args.manifold_learning_rate}


def _architecture(args: argparse.Namespace) -> dict[str, Any]:
    return dict(outer_layers=args.outer_layers, inner_layers=args.inner_layers,
                hidden_features=args.hidden_features)


def _add_training_options(parser: argparse.ArgumentParser, epochs: int,
                          density_epochs: int | None) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=epochs,
                       help="epoch budget E (sequential: E/2 manifold epochs)")
    group.add_argument("--density-epochs", type=int, default=density_epochs,
                       help="most density-phase epochs of the sequential schedule (cheap: "
                            "they run on cached encodings); it stops earlier when the "
                            "validation loss stops improving; default: "
                            + (f"{DENSITY_EPOCHS_FACTOR} × --epochs" if density_epochs is None
                               else str(density_epochs)))
    group.add_argument("--schedule", default="auto",
                       choices=["auto", "sequential", "alternating", "simultaneous"])
    group.add_argument("--learning-rate", type=float,
                       help="AdamW's (density phase of M/D); default 1e-3·√(batch/100)")
    group.add_argument("--manifold-learning-rate", type=float,
                       help="AdamW's in the manifold phase; default "
                            f"{MANIFOLD_RATE_FACTOR:g} × --learning-rate")
    group.add_argument("--outer-layers", type=int, default=5)
    group.add_argument("--inner-layers", type=int, default=3)
    group.add_argument("--hidden-features", type=int,
                       default=ManifoldFlowConfig.hidden_features,
                       help="width of the conditioner nets (default: the library's)")


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("posterior sampling (Pyro NUTS)")
    group.add_argument("--num-samples", type=int, default=1000, help="draws over all chains")
    group.add_argument("--chains", type=int, default=None,
                       help=f"NUTS chains (default: the sampler's, {NUTSConfig.num_chains}; "
                            "more chains give stabler mode shares)")
    group.add_argument("--thin", type=int, default=None,
                       help="keep every k-th transition (default: the sampler's, so that "
                            f"each chain runs ≥ {NUTSConfig.min_transitions} transitions)")
    group.add_argument("--warmup", type=int, default=NUTSConfig.warmup_steps,
                       help="adaptation steps per chain")


def _add_common(parser: argparse.ArgumentParser, default_out: str | None = None) -> None:
    if default_out is None:
        parser.add_argument("--out", required=True, help="output folder")
    else:
        parser.add_argument("--out", default=default_out,
                            help=f"output folder (default: ./{default_out})")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty output folder (overwrites our files)")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (small batches run fastest on one)")


def _manifold_dim(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer n or 'auto', got {value!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sbi-mflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="whole pipeline on PolynomialSurface",
                               description=__doc__.splitlines()[2])
    _add_common(demo, default_out="sbi-mflow-demo")
    demo.add_argument("--simulations", type=int, default=10000)
    demo.add_argument("--trials", type=int, default=20, help="iid observations at default θ")
    _add_training_options(demo, epochs=40, density_epochs=50)
    _add_sampling_options(demo)

    train = commands.add_parser("train", help="train on a simulator or on data files")
    _add_common(train)
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--simulator", choices=sorted(SIMULATORS))
    source.add_argument("--x", help=".npy/.pt file of x (N, d); needs --theta")
    source.add_argument("--store", help="Zarr store of `sbi-mflow simulate` or sbi_mflow.simulate")
    train.add_argument("--theta", help=".npy/.pt file of θ (N, p)")
    train.add_argument("--score", help="optional .npy/.pt joint scores (N, p) for SCANDAL")
    train.add_argument("--simulations", type=int, default=4000)
    train.add_argument("--model", default="mflow", choices=list(sbi_mflow.MODELS))
    train.add_argument("--manifold-dim", type=_manifold_dim,
                       help="n, or 'auto' to estimate it (sbi-mflow dimension); default: the "
                            "simulator's n, else 'auto'")
    train.add_argument("--scandal-weight", type=float, default=0.0)
    train.add_argument("--prior-low", type=float, nargs="+", help="box prior for data files")
    train.add_argument("--prior-high", type=float, nargs="+")
    _add_training_options(train, epochs=40, density_epochs=None)

    infer = commands.add_parser("infer", help="posterior of a trained model for x_o")
    _add_common(infer)
    infer.add_argument("--model", required=True, help="run folder or its model.pt")
    infer.add_argument("--x-o", required=True, help=".npy/.pt file of observations (T, d)")
    _add_sampling_options(infer)
    add_simulate_command(commands)
    add_dimension_command(commands, _add_common)
    return parser


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet


def _sampler_options(args: argparse.Namespace) -> dict[str, Any]:
    """NUTS settings given on the command line (the sampler's defaults for the rest)."""
    options = {"warmup_steps": args.warmup}
    if args.chains is not None:
        options["num_chains"] = args.chains
    if args.thin is not None:
        options["thin"] = args.thin
    return options


def _sample(posterior, x_o: torch.Tensor, args: argparse.Namespace):
    return posterior.sample_arviz(args.num_samples, x=x_o, seed=args.seed,
                                  show_progress_bars=_progress(args))


def _write_posterior(out: Path, idata, posterior_samples: torch.Tensor, names,
                     reference=None, true_theta=None) -> dict[str, Any]:
    import arviz as az

    idata.to_netcdf(str(out / "posterior.nc"))
    summary = az.summary(idata, round_to=3)  # R-hat to 3 decimals: 1.007 is not 1.01
    (out / "posterior_summary.txt").write_text(summary.to_string() + "\n")
    plot_posterior(posterior_samples.numpy(), out / "posterior.png", reference, true_theta, names)
    plot_trace(idata, out / "trace.png")
    return {"r_hat_max": float(summary["r_hat"].max()),
            "ess_bulk_min": float(summary["ess_bulk"].min()),
            "divergences": int(idata.sample_stats["diverging"].values.sum()),
            "arviz_summary": summary.to_string()}


def _posterior_samples(idata) -> torch.Tensor:
    values = idata.posterior["theta"].values
    return torch.as_tensor(values.reshape(-1, values.shape[-1]), dtype=torch.float32)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    out = prepare_output(args.out, args.force)
    started = time.time()
    simulator = make_simulator("polynomial-surface")
    theta, x, _ = simulate(simulator, args.simulations, False, args.seed,
                           progress=_progress(args))
    inference, estimator = train_model(
        theta, x, None, simulator.prior, "mflow", simulator.manifold_dim, args.epochs,
        args.schedule, 0.0, args.device, _progress(args), _training(args),
        **_architecture(args))
    trained = time.time()
    sbi_mflow.save(estimator, out / "model.pt")
    plot_training(inference.summary["phases"], out / "training.png")

    torch.manual_seed(args.seed + 1)
    true_theta = simulator.default_theta
    x_o = simulator(true_theta.expand(args.trials, -1))
    posterior = inference.build_posterior(**_sampler_options(args))
    idata = _sample(posterior, x_o.to(args.device), args)
    samples = _posterior_samples(idata)
    sampled = time.time()
    reference = simulator.reference_posterior(x_o, len(samples))
    with torch.no_grad():
        model_x = estimator.sample((1,), simulator.prior.sample((3000,)).to(args.device))[0]
        theta_test = simulator.prior.sample((1000,))
        x_test = simulator(theta_test).to(args.device)
        reconstruction = metrics.mean_reconstruction_error(x_test, estimator)
        distance = metrics.mean_distance_to_manifold(model_x.cpu(), simulator)
    plot_manifold(x[:3000].numpy(), model_x.cpu().numpy(), out / "manifold.png")
    results = {
        "simulator": "polynomial-surface",
        "true_theta": true_theta.tolist(),
        "num_trials": args.trials,
        "posterior_mmd_squared": metrics.mmd_squared(samples, reference),
        "posterior_c2st": float(metrics.c2st(samples, reference, seed=args.seed)),
        "reconstruction_error": reconstruction,
        "sample_distance_to_manifold": distance,
        "seconds": {"training": trained - started, "sampling": sampled - trained,
                    "total": time.time() - started},
    }
    results.update(_write_posterior(out, idata, samples, ["theta"], reference.numpy(),
                                    true_theta.numpy()))
    write_json(out / "run.json", {"simulator": "polynomial-surface", "model": "mflow",
                                  "train_config": inference.summary["train_config"],
                                  "summary": inference.summary["phases"]})
    write_json(out / "summary.json", results)
    print(f"\n{results.pop('arviz_summary')}\n")
    for key, value in results.items():
        print(f"{key:>28}: {value}")
    print(f"\nwrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return results


def run_train(args: argparse.Namespace) -> None:
    if args.x is not None and args.theta is None:
        raise CommandError("--x needs --theta (and optionally --score).")
    chart = _chart(args)  # before any simulation: a FOM without a chart fails at once
    out = prepare_output(args.out, args.force)
    run: dict[str, Any] = {"model": args.model}
    if args.simulator:
        simulator = make_simulator(args.simulator)
        theta, x, score = simulate(simulator, args.simulations, args.scandal_weight > 0,
                                   args.seed, progress=_progress(args))
        prior, manifold_dim = simulator.prior, args.manifold_dim or simulator.manifold_dim
        run["simulator"] = args.simulator
    elif args.store:
        theta, x, score, prior, manifold_dim = training_data_from_store(args, run)
    else:
        theta, x = load_array(args.theta, "theta"), load_array(args.x, "x")
        score = load_array(args.score, "score") if args.score else None
        if theta.shape[0] != x.shape[0]:
            raise CommandError(f"theta has {theta.shape[0]} rows but x has {x.shape[0]}.")
        if score is not None and score.shape != theta.shape:
            raise CommandError(f"score must have theta's shape {tuple(theta.shape)}, "
                               f"got {tuple(score.shape)}.")
        box = box_prior_metadata(theta, args.prior_low, args.prior_high)
        run["prior_box"] = box
        prior, _ = prior_from_run(run, args.device)
        manifold_dim = args.manifold_dim or "auto"
        torch.manual_seed(args.seed)
    inference, estimator = train_model(
        theta, x, score, prior, args.model, manifold_dim, args.epochs, args.schedule,
        args.scandal_weight, args.device, _progress(args), _training(args),
        **chart, **_architecture(args))
    manifold_dim = estimator.manifold_dim
    sbi_mflow.save(estimator, out / "model.pt")
    plot_training(inference.summary["phases"], out / "training.png")
    with torch.no_grad():
        errors = estimator.reconstruction_error(x[-min(len(x), 2000):].to(args.device))
    run.update({"data_dim": x.shape[1], "param_dim": theta.shape[1],
                "manifold_dim": manifold_dim, "reconstruction_error_mean": float(errors.mean()),
                "train_config": inference.summary["train_config"],
                "summary": inference.summary["phases"]})
    write_json(out / "run.json", run)
    print(f"trained {args.model} (n={manifold_dim}); mean reconstruction error "
          f"{float(errors.mean()):.4g}; wrote model.pt, run.json, training.png to {out}")


def _chart(args: argparse.Namespace) -> dict[str, Any]:
    """``chart=`` of a model on a prescribed manifold: the named simulator's own chart."""
    if sbi_mflow.PRESETS[args.model].chart != "prescribed":
        return {}
    chart = getattr(make_simulator(args.simulator), "manifold_chart", None) if (
        args.simulator) else None
    if chart is None:
        raise CommandError(f"--model {args.model} needs the manifold's chart; only a "
                           "--simulator that knows its chart provides one on the command "
                           "line (in Python: manifold_likelihood_nn('fom', chart=...)).")
    return {"chart": chart()}


def run_infer(args: argparse.Namespace) -> None:
    import json

    model_path = Path(args.model)
    if model_path.is_dir():
        model_path = model_path / "model.pt"
    run_path = model_path.parent / "run.json"
    if not model_path.is_file():
        raise CommandError(f"No trained model at {model_path}.")
    if not run_path.is_file():
        raise CommandError(f"{run_path} is missing: infer needs the run folder of `train`.")
    run = json.loads(run_path.read_text())
    estimator = sbi_mflow.load(model_path, map_location=args.device)
    x_o = load_array(args.x_o, "x_o")
    if x_o.shape[1] != estimator.data_dim:
        raise CommandError(f"x_o has {x_o.shape[1]} columns but the model expects "
                           f"d = {estimator.data_dim}.")
    out = prepare_output(args.out, args.force)
    prior, _ = prior_from_run(run, args.device)
    from sbi_mflow.sampling import manifold_posterior

    posterior = manifold_posterior(estimator, prior, **_sampler_options(args))
    idata = _sample(posterior, x_o.to(args.device), args)
    samples = _posterior_samples(idata)
    results = _write_posterior(out, idata, samples, None)
    print(f"\n{results.pop('arviz_summary')}\n")
    write_json(out / "summary.json", results)
    print(f"wrote posterior.nc, posterior_summary.txt, posterior.png, trace.png, summary.json "
          f"to {out}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda requested but no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads < 1:
        print("error: --threads must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    commands = {"demo": run_demo, "train": run_train, "infer": run_infer,
                "simulate": run_simulate, "dimension": run_dimension}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*triangular_solve is deprecated.*")
            commands[args.command](args)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
