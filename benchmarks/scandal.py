"""Benchmark: posterior quality against the number of simulations, with and without SCANDAL.

Simulator: ``ParticleDecay`` (d = 40, manifold n = 10, θ ∈ [-1, 1]³), whose
``simulate_with_score`` also returns the joint score t(x, z|θ) = ∇θ log p(x, z|θ). Observed
data: ``--trials`` iid events at ``default_theta`` (θ = 0). For each number of simulations N
(the first N of one seeded simulation run, so larger budgets contain the smaller ones), four
estimators are trained through the same trainer, ``sbi_mflow.ManifoldNLE``, on the same data,
initialisation and validation split; the only difference within a model is the SCANDAL weight
α (``append_simulations(theta, x, score=t)``, ``train(scandal_weight=α)``):

* M-flow (ours): ``manifold_likelihood_nn("mflow", 10, ...)``, ``schedule="sequential"``
  (E/2 manifold epochs, then E/2 density epochs; SCANDAL acts in the density phase);
  posterior by fixed-manifold Pyro NUTS on the chart potential (``build_posterior``);
* NSF (sbi): ``sbi.neural_nets.likelihood_nn("nsf", ...)``, ``schedule="simultaneous"``
  (E epochs of −log q(x|θ) [+ α · score MSE]); posterior with sbi's own samplers on the
  ``NLE`` potential: rejection sampling from the prior (default, exact i.i.d. draws of the
  learned posterior), ``slice_np_vectorized`` MCMC (``--nsf-sampler slice``) or the M-flow's
  Pyro NUTS runner (``--nsf-sampler nuts``).

Metrics, each from ``--samples`` posterior draws:

* C2ST (``sbi_mflow.metrics.c2st``) against the simulator's reference posterior (drawn on a
  60³ grid, exact up to the cell size 1/30): 0.5 = indistinguishable, 1 = disjoint;
* log posterior density at the true θ (``sbi_mflow.metrics.log_posterior_at_true_theta``,
  Gaussian KDE of the draws; higher is better; the reference posterior's value is given
  for comparison, the prior's is −log 8 = −2.08);
* held-out score error mean ‖∇θ log q(x|θ) − t‖² on 1000 fresh simulations (for this
  simulator t is the true score ∇θ log p(x|θ), up to float rounding; predicting 0 gives
  mean ‖t‖²), and training / sampling wall times.

Defaults: N = 500, 1000, 2000, E = 60, 10 trials, α = 2, 1000 draws. The default run took
28 min with one torch thread on the shared 2-core development machine (N up to 5000 would
roughly double it: SCANDAL training of the NSF needs double backpropagation through the
40-dimensional flow, ~1.5 s per epoch per 1000 simulations here)::

    nice -n 5 python -m benchmarks.scandal 2>&1 | tee /tmp/scandal.log

Smoke run (a few minutes)::

    python -m benchmarks.scandal --quick

Writes ``benchmarks/results/<name>.json`` (``--name``; default ``scandal``, with
``--quick`` ``scandal_quick``): settings, machine, commit, baselines and, per (model, α, N),
the metrics, times and sampler diagnostics; :func:`section` renders ``scandal.json`` for
``docs/benchmarks.md`` (``--report`` prints it).

Why these sampler settings: sbi's ``slice_np_vectorized`` starts every chain's brackets at
width 0.01 in the unconstrained space and steps them out linearly, so on these broad
posteriors (σ ≈ 0.3–0.5 on [-1, 1]) its first draws cost hundreds of potential calls; with 20
chains × 50 draws + 50 warm-up it took ~8 min per posterior on this machine (50 chains × 20
draws + 10 warm-up did not finish in 10 min); rejection sampling from the prior took 50–80 s
(half of it sbi's gradient-ascent search for the maximum). The same Pyro NUTS runner as the
M-flow's (``--nsf-sampler nuts``) took ~5 min: ~30 ms per NSF potential + gradient on 10
trials against ~10 ms for the chart potential. NUTS on the chart potential needs ~7
potential + gradient calls per draw, so 2 chains × 500 draws with 100 warm-up take 70–90 s.
Rejection sampling is capped by ``--rejection-timeout``: when an over-confident model accepts
< 1 % of the prior draws, the metrics use the draws collected so far (C2ST against as many
reference draws) and the sampler notes say so.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import warnings
from typing import Any

import torch

import sbi_mflow
from benchmarks._results import describe_machine, load_result, machine, markdown_table, write_result
from sbi_mflow.losses import ChartNLL, NegativeLogLikelihood
from sbi_mflow.metrics import c2st, log_posterior_at_true_theta
from sbi_mflow.tracking import NullTracker

__all__ = ["MODELS", "main", "render", "section"]

MODELS = {"mflow": "M-flow (ours)", "nsf": "NSF (sbi)"}
NAME = "scandal"


def _rule(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}", flush=True)


def _builder(model: str, args: argparse.Namespace, manifold_dim: int):
    from sbi.neural_nets import likelihood_nn

    if model == "mflow":
        return sbi_mflow.manifold_likelihood_nn(
            "mflow", manifold_dim, outer_layers=args.outer_layers,
            inner_layers=args.inner_layers, hidden_features=args.hidden, num_blocks=1,
        )
    # same total number of coupling layers and width as the M-flow
    return likelihood_nn("nsf", num_transforms=args.outer_layers + args.inner_layers,
                         hidden_features=args.hidden)


def train(model: str, alpha: float, theta, x, score, simulator, args):
    """A ManifoldNLE with the model trained at SCANDAL weight α, the trained estimator, and
    the wall time."""
    torch.manual_seed(args.seed)  # same initialisation and validation split for both α
    inference = sbi_mflow.ManifoldNLE(
        simulator.prior, density_estimator=_builder(model, args, simulator.manifold_dim),
        show_progress_bars=False, tracker=NullTracker(),
    )
    inference.append_simulations(theta, x, score=score)
    start = time.perf_counter()
    estimator = inference.train(
        schedule="sequential" if model == "mflow" else "simultaneous",
        scandal_weight=alpha, max_num_epochs=args.epochs,
        density_epochs=args.density_epochs if model == "mflow" else None,
        training_batch_size=args.batch, learning_rate=args.lr,
    )
    return inference, estimator, time.perf_counter() - start


def held_out_score_error(model: str, estimator, theta, x, score) -> float:
    """mean ‖∇θ log q(x|θ) − t‖² (chart log-likelihood for the M-flow: same θ-gradient)."""
    estimator.eval()
    loss = ChartNLL(1.0) if model == "mflow" else NegativeLogLikelihood(1.0)
    errors = [
        loss.terms(estimator, xb, tb, sb)["score_mse"].detach()
        for tb, xb, sb in zip(theta.split(250), x.split(250), score.split(250), strict=True)
    ]
    return float(torch.cat(errors).mean())


def sample_posterior(model: str, inference, estimator, prior, x_o,
                     args) -> tuple[torch.Tensor, dict[str, Any]]:
    """``args.samples`` posterior draws and the sampler's diagnostics (``method``, its
    numbers, and a one-line ``note``)."""
    if model == "mflow" or args.nsf_sampler == "nuts":
        return _nuts(inference, x_o, args)

    from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters

    if args.nsf_sampler == "rejection":
        from sbi.inference.potentials import likelihood_estimator_based_potential
        from sbi.samplers.rejection.rejection import rejection_sample

        potential, transform = likelihood_estimator_based_potential(estimator, prior, x_o)
        # sbi's RejectionPosterior searches the maximum by gradient ascent from 1000 of 10000
        # prior draws (minutes here) and cannot reshape partial results: call its sampler.
        samples, acceptance = rejection_sample(
            potential, prior, transform, num_samples=args.samples,
            show_progress_bars=False, max_sampling_batch_size=2000,
            num_samples_to_find_max=500, num_iter_to_find_max=100, m=1.2,
            max_sampling_time=args.rejection_timeout, return_partial_on_timeout=True,
        )
        samples = samples[: args.samples]
        timed_out = samples.shape[0] < args.samples
        note = f"rejection from the prior, acceptance {float(acceptance):.3f}"
        if timed_out:
            note += f", timed out after {args.rejection_timeout:g} s with {samples.shape[0]} draws"
        return samples.float(), {"method": "rejection", "acceptance": float(acceptance),
                                 "timed_out": timed_out, "note": note}
    parameters = MCMCPosteriorParameters(
        method="slice_np_vectorized", num_chains=args.sbi_chains,
        warmup_steps=args.sbi_warmup, thin=1, init_strategy="resample",
    )
    posterior = inference.build_posterior(posterior_parameters=parameters)  # sbi's sampler
    samples = posterior.sample((args.samples,), x=x_o, show_progress_bars=False)
    return samples.float(), {"method": "slice", "note": f"slice, {args.sbi_chains} chains, "
                                                         f"{args.sbi_warmup} warm-up"}


def _nuts(inference, x_o, args) -> tuple[torch.Tensor, dict[str, Any]]:
    """The library's NUTS posterior: the chart potential for the M-flow, the exact
    likelihood for sbi's NSF."""
    from sbi_mflow.sampling.convergence import summarize

    posterior = inference.build_posterior(
        num_chains=args.chains, warmup_steps=args.warmup, max_tree_depth=args.max_tree_depth,
        check_convergence=False,
    )
    samples = posterior.sample((args.samples,), x=x_o, seed=args.seed)
    result = posterior.chain_result
    draws = result.samples.shape[1]
    steps = sum(result.potential_calls) / (args.chains * (args.warmup + draws * result.thin))
    theta = posterior.theta_transform.inv(result.samples).detach().double().numpy()
    rhat = summarize(theta).max_rhat
    return samples.float(), {
        "method": "nuts", "rhat": float(rhat), "divergences": int(result.num_divergences),
        "gradients_per_transition": float(steps),
        "note": f"NUTS R̂ {rhat:.3f}, {result.num_divergences} div., {steps:.1f} grad/transition"}


def metrics(samples: torch.Tensor, reference: torch.Tensor, theta_true) -> dict[str, float]:
    """C2ST (against as many reference draws as there are samples) and log p(θ_true | x_o)."""
    try:
        return dict(c2st=c2st(samples, reference[: samples.shape[0]]),
                    lp=log_posterior_at_true_theta(theta_true, samples))
    except ValueError as error:  # too few or collapsed draws
        print(f"  metrics failed: {error}")
        return dict(c2st=math.nan, lp=math.nan)


def run_arm(model: str, alpha: float, simulations, held_out, simulator, x_o, reference,
            args) -> dict[str, Any]:
    """Train one (model, α) arm on ``simulations`` = (θ, x, t), then score its posterior for
    ``x_o`` against ``reference`` and its θ-score on ``held_out`` = (θ, x, t)."""
    label = f"{MODELS[model]}, α={alpha:g}"
    inference, estimator, train_s = train(model, alpha, *simulations, simulator, args)
    score_error = held_out_score_error(model, estimator, *held_out)
    epochs = inference.summary["epochs_trained"][-1]
    print(f"{label:24s} trained {epochs} epochs in {train_s:6.1f} s; held-out score "
          f"error {score_error:.3f}", flush=True)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    samples, sampler = sample_posterior(model, inference, estimator, simulator.prior, x_o, args)
    sample_s = time.perf_counter() - start
    quality = metrics(samples, reference, simulator.default_theta)
    print(f"{label:24s} sampled in {sample_s:6.1f} s ({sampler['note']}); C2ST "
          f"{quality['c2st']:.3f}, log p(θ_true|x_o) {quality['lp']:.2f}", flush=True)
    return {"model": model, "scandal_weight": alpha, "simulations": len(simulations[0]),
            "c2st": quality["c2st"], "log_posterior_true_theta": quality["lp"],
            "score_error": score_error, "train_s": train_s, "epochs": epochs,
            "sample_s": sample_s, "draws": int(samples.shape[0]), "sampler": sampler}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--scandal-weight", type=float, default=2.0, help="α of the SCANDAL arm")
    parser.add_argument("--epochs", type=int, default=60,
                        help="budget E: M-flow E/2 manifold + E/2 density epochs; NSF E epochs")
    parser.add_argument("--density-epochs", type=int, default=None,
                        help="M-flow density epochs (default E/2)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--outer-layers", type=int, default=4)
    parser.add_argument("--inner-layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2, help="NUTS chains (M-flow)")
    parser.add_argument("--warmup", type=int, default=100, help="NUTS warm-up steps per chain")
    parser.add_argument("--max-tree-depth", type=int, default=8)
    parser.add_argument("--nsf-sampler", choices=["rejection", "nuts", "slice"],
                        default="rejection")
    parser.add_argument("--rejection-timeout", type=float, default=90.0,
                        help="seconds; rejection sampling returns its draws so far after it")
    parser.add_argument("--sbi-chains", type=int, default=20)
    parser.add_argument("--sbi-warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 300 simulations, 6 epochs, 200 draws")
    parser.add_argument("--name", default=None,
                        help="writes benchmarks/results/NAME.json (default scandal, with "
                             "--quick scandal_quick)")
    parser.add_argument("--report", action="store_true", help="print section() and exit")
    return parser


def _baselines(reference, reference_2, prior_draws, theta_true) -> dict[str, tuple[float, float]]:
    """C2ST and log p(θ_true | x_o) of a second reference draw (the metric's floor) and of
    the prior (its ceiling)."""
    return {
        "reference posterior": (c2st(reference_2, reference),
                                log_posterior_at_true_theta(theta_true, reference_2)),
        "prior": (c2st(prior_draws, reference),
                  log_posterior_at_true_theta(theta_true, prior_draws)),
    }


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.report:
        print(section(), end="")
        return
    if args.quick:
        args.simulations, args.epochs, args.samples = [300], 6, 200
        args.warmup, args.chains, args.rejection_timeout = 50, 1, 20.0
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)  # sbi's low-acceptance notice: in the notes
    from simulators import ParticleDecay

    started = time.perf_counter()
    simulator = ParticleDecay()
    alpha = args.scandal_weight
    print(f"torch {torch.__version__}, {args.threads} thread(s); ParticleDecay d="
          f"{simulator.data_dim}, n={simulator.manifold_dim}, p={simulator.param_dim}")
    torch.manual_seed(args.seed)
    theta_all = simulator.prior.sample((max(args.simulations),))
    x_all, score_all = simulator.simulate_with_score(theta_all)
    theta_test = simulator.prior.sample((1000,))
    x_test, score_test = simulator.simulate_with_score(theta_test)
    theta_true = simulator.default_theta
    x_o = simulator(theta_true.expand(args.trials, simulator.param_dim))
    reference = simulator.reference_posterior(x_o, args.samples, method="grid").float()
    reference_2 = simulator.reference_posterior(x_o, args.samples, method="grid").float()
    prior_draws = simulator.prior.sample((args.samples,)).float()
    baseline = _baselines(reference, reference_2, prior_draws, theta_true)
    zero_score_error = float((score_test**2).sum(1).mean())
    print(f"x_o: {args.trials} iid trials at θ = {theta_true.tolist()}; reference posterior "
          f"mean {[round(v, 2) for v in reference.mean(0).tolist()]}, "
          f"std {[round(v, 2) for v in reference.std(0).tolist()]}")
    for name, (acc, lp) in baseline.items():
        print(f"baseline {name:20s} C2ST {acc:.3f}   log p(θ_true|x_o) {lp:.2f}")
    print(f"held-out score error of the zero score: {zero_score_error:.3f}")

    arms = [(m, a) for m in args.models for a in (0.0, alpha)]
    runs: list[dict[str, Any]] = []
    for n in args.simulations:
        _rule(f"{n} simulations")
        theta, x, score = theta_all[:n], x_all[:n], score_all[:n]
        for model, a in arms:
            runs.append(run_arm(model, a, (theta, x, score), (theta_test, x_test, score_test),
                                simulator, x_o, reference, args))

    from sbi_mflow.training.config import TrainConfig

    settings = {k: v for k, v in vars(args).items() if k not in ("name", "report", "quick")}
    config = TrainConfig(max_num_epochs=args.epochs)
    settings.update(manifold_epochs=config.manifold_epochs,
                    density_epochs=args.density_epochs or config.manifold_epochs,
                    stop_after_epochs=config.stop_after_epochs)
    box = simulator.prior.support.base_constraint  # BoxUniform: an interval per θ_i
    command = "python -m benchmarks.scandal " + " ".join(sys.argv[1:] if argv is None else argv)
    path = write_result(args.name or ("scandal_quick" if args.quick else NAME), {
        "command": command.strip(), "settings": settings, "machine": machine(),
        "simulator": {"name": "ParticleDecay", "data_dim": simulator.data_dim,
                      "manifold_dim": simulator.manifold_dim,
                      "param_dim": simulator.param_dim, "low": box.lower_bound.tolist(),
                      "high": box.upper_bound.tolist(), "theta_true": theta_true.tolist()},
        "baselines": {name.replace(" ", "_"): {"c2st": acc, "log_posterior_true_theta": lp}
                      for name, (acc, lp) in baseline.items()},
        "zero_score_error": zero_score_error, "score_test_simulations": len(theta_test),
        "total_s": time.perf_counter() - started,
        "runs": runs})
    _rule("results")
    print(render(load_result(path.stem)))
    print(f"written to {path}")


_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _box(low: list[float], high: list[float]) -> str:
    """θ's box: [a, b]ᵖ when every side is the same, else the sides."""
    if len(set(low)) == 1 and len(set(high)) == 1:
        return f"[{low[0]:g}, {high[0]:g}]" + str(len(low)).translate(_SUPERSCRIPT)
    return " × ".join(f"[{a:g}, {b:g}]" for a, b in zip(low, high, strict=True))


def _span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return f"{low:{fmt}}" if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{low:{fmt}}–{high:{fmt}}"


def render(record: dict[str, Any]) -> str:
    """The Markdown section of one result file (see :func:`section`)."""
    settings, sim = record["settings"], record["simulator"]
    runs = record["runs"]
    sizes = sorted({r["simulations"] for r in runs})
    arms = list(dict.fromkeys((r["model"], r["scandal_weight"]) for r in runs))
    by_key = {(r["model"], r["scandal_weight"], r["simulations"]): r for r in runs}

    def table(cell) -> str:
        rows = [[MODELS.get(m, m), "yes" if a > 0 else "no"]
                + [cell(by_key[(m, a, n)]) if (m, a, n) in by_key else "–" for n in sizes]
                for m, a in arms]
        return markdown_table(["model", "SCANDAL", *(f"{n} sims" for n in sizes)], rows)

    def quality(r: dict[str, Any]) -> str:
        partial = r.get("sampler", {}).get("timed_out")
        return (f"{r['c2st']:.3f} / {r['log_posterior_true_theta']:.2f}"
                + ("\\*" if partial else ""))

    base = record["baselines"]
    reference, prior = base["reference_posterior"], base["prior"]
    theta_true = sim["theta_true"]
    at = (f"θ = {theta_true[0]:g}" if len(set(theta_true)) == 1
          else f"θ = ({', '.join(f'{v:g}' for v in theta_true)})")
    nuts = [r["sampler"] for r in runs if r.get("sampler", {}).get("method") == "nuts"]
    timed_out = [r for r in runs if r.get("sampler", {}).get("timed_out")]
    notes = []
    if nuts:
        notes.append(f"NUTS: R̂ ≤ {max(s['rhat'] for s in nuts):.3f}, "
                     f"{sum(s['divergences'] for s in nuts)} divergences in all, "
                     f"{_span([s['gradients_per_transition'] for s in nuts], '.1f')} "
                     "gradients per transition")
    rejection = [r["sampler"] for r in runs if r.get("sampler", {}).get("method") == "rejection"]
    if rejection:
        notes.append("rejection sampling: acceptance "
                     f"{_span([s['acceptance'] for s in rejection], '.3f')}")
    footnote = ""
    if timed_out:
        footnote = (f"\n\n\\* rejection sampling reached its time cap "
                    f"({settings.get('rejection_timeout', 0):g} s) after "
                    f"{_span([r['draws'] for r in timed_out], 'd')} draws; C2ST against as many "
                    "reference draws.")
    nsf_sampler = {"rejection": "rejection sampling from the prior",
                   "nuts": "the same NUTS runner on sbi's NLE potential",
                   "slice": "sbi's `slice_np_vectorized`"}.get(settings.get("nsf_sampler"), "?")
    seed = f", seed {settings['seed']}" if "seed" in settings else ""
    text = (
        "## SCANDAL on `ParticleDecay` (`python -m benchmarks.scandal`)\n\n"
        f"Posterior quality against the number of simulations, with and without SCANDAL. "
        f"`{sim.get('name', 'ParticleDecay')}`: d = {sim['data_dim']}, n = "
        f"{sim['manifold_dim']}, θ ∈ {_box(sim['low'], sim['high'])}; x_o = "
        f"{settings['trials']} iid trials at {at}{seed}. Both arms of a model use the same "
        "trainer (`ManifoldNLE`), seed, initialisation and validation split; only the SCANDAL "
        f"weight differs (α = {settings['scandal_weight']:g}: the score term α · ‖∇θ log q − "
        "t‖² is added to the per-sample NLL). M-flow: "
        f"{settings['outer_layers']} outer + {settings['inner_layers']} inner couplings, "
        f"{settings.get('manifold_epochs', settings['epochs'] // 2)} manifold + "
        f"{settings['density_epochs']} density epochs (sequential), posterior by NUTS on the "
        f"chart potential ({settings['chains']} chains, {settings['warmup']} warm-up). NSF: "
        f"sbi's `likelihood_nn(\"nsf\")` with "
        f"{settings['outer_layers'] + settings['inner_layers']} couplings, "
        f"{settings['epochs']} epochs, posterior by {nsf_sampler}. Hidden features "
        f"{settings['hidden']}, batch {settings['batch']}, learning rate {settings['lr']:g}, "
        + (f"early stopping after {settings['stop_after_epochs']} epochs without improvement, "
           if "stop_after_epochs" in settings else "")
        + f"{settings['samples']} posterior draws. Total {record['total_s'] / 60:.1f} min.\n\n"
        "C2ST against the reference posterior (0.5: indistinguishable) / log p(θ_true | x_o) "
        f"(an over-confident posterior can score above the reference's own value, so read it "
        f"beside the C2ST); the reference against a second draw of itself gives "
        f"{reference['c2st']:.3f} / {reference['log_posterior_true_theta']:.2f}, the prior "
        f"{prior['c2st']:.3f} / {prior['log_posterior_true_theta']:.2f}:\n\n"
        + table(quality) + footnote
        + "\n\nHeld-out score error mean ‖∇θ log q(x|θ) − t‖² on "
        + (f"{record['score_test_simulations']} " if "score_test_simulations" in record else "")
        + f"fresh simulations (a zero score gives {record['zero_score_error']:.3f}):\n\n"
        + table(lambda r: f"{r['score_error']:#.3g}")
        + "\n\nWall times, training (epochs run) / posterior sampling:\n\n"
        + table(lambda r: f"{r['train_s']:.0f} s ({r['epochs']} ep.) / {r['sample_s']:.0f} s")
        + ("\n\nSamplers: " + "; ".join(notes) + "." if notes else ""))
    return text + f"\n\nMachine: {describe_machine(record)}.\n"


def section() -> str:
    """C2ST, log p(θ_true | x_o), held-out score error and times of the M-flow and sbi's NSF,
    with and without SCANDAL, per number of simulations (``scandal.json``)."""
    record = load_result(NAME)
    return render(record) if record is not None else ""


if __name__ == "__main__":
    main()
