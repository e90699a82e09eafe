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

Writes a Markdown report to ``--output`` (default ``benchmarks/results/scandal.md``).
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
from pathlib import Path

import torch

import sbi_mflow
from sbi_mflow.losses import ChartNLL, NegativeLogLikelihood
from sbi_mflow.metrics import c2st, log_posterior_at_true_theta
from sbi_mflow.tracking import NullTracker

MODELS = {"mflow": "M-flow (ours)", "nsf": "NSF (sbi)"}


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
    """A ManifoldNLE with the model trained at SCANDAL weight α, and its wall time."""
    torch.manual_seed(args.seed)  # same initialisation and validation split for both α
    inference = sbi_mflow.ManifoldNLE(
        simulator.prior, density_estimator=_builder(model, args, simulator.manifold_dim),
        show_progress_bars=False, tracker=NullTracker(),
    )
    inference.append_simulations(theta, x, score=score)
    start = time.perf_counter()
    inference.train(
        schedule="sequential" if model == "mflow" else "simultaneous",
        scandal_weight=alpha, max_num_epochs=args.epochs,
        density_epochs=args.density_epochs if model == "mflow" else None,
        training_batch_size=args.batch, learning_rate=args.lr,
    )
    return inference, time.perf_counter() - start


def held_out_score_error(model: str, estimator, theta, x, score) -> float:
    """mean ‖∇θ log q(x|θ) − t‖² (chart log-likelihood for the M-flow: same θ-gradient)."""
    estimator.eval()
    loss = ChartNLL(1.0) if model == "mflow" else NegativeLogLikelihood(1.0)
    errors = [
        loss.terms(estimator, xb, tb, sb)["score_mse"].detach()
        for tb, xb, sb in zip(theta.split(250), x.split(250), score.split(250), strict=True)
    ]
    return float(torch.cat(errors).mean())


def sample_posterior(model: str, inference, x_o, args) -> tuple[torch.Tensor, str]:
    """``args.samples`` posterior draws and a short note on the sampler's diagnostics."""
    if model == "mflow" or args.nsf_sampler == "nuts":
        return _nuts(inference, x_o, args)

    from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters

    if args.nsf_sampler == "rejection":
        from sbi.inference.potentials import likelihood_estimator_based_potential
        from sbi.samplers.rejection.rejection import rejection_sample

        potential, transform = likelihood_estimator_based_potential(
            inference._neural_net, inference._prior, x_o)
        # sbi's RejectionPosterior searches the maximum by gradient ascent from 1000 of 10000
        # prior draws (minutes here) and cannot reshape partial results: call its sampler.
        samples, acceptance = rejection_sample(
            potential, inference._prior, transform, num_samples=args.samples,
            show_progress_bars=False, max_sampling_batch_size=2000,
            num_samples_to_find_max=500, num_iter_to_find_max=100, m=1.2,
            max_sampling_time=args.rejection_timeout, return_partial_on_timeout=True,
        )
        samples = samples[: args.samples]
        note = f"rejection from the prior, acceptance {float(acceptance):.3f}"
        if samples.shape[0] < args.samples:
            note += f", timed out after {args.rejection_timeout:g} s with {samples.shape[0]} draws"
        return samples.float(), note
    parameters = MCMCPosteriorParameters(
        method="slice_np_vectorized", num_chains=args.sbi_chains,
        warmup_steps=args.sbi_warmup, thin=1, init_strategy="resample",
    )
    posterior = inference.build_posterior(posterior_parameters=parameters)  # sbi's sampler
    samples = posterior.sample((args.samples,), x=x_o, show_progress_bars=False)
    return samples.float(), f"slice, {args.sbi_chains} chains, {args.sbi_warmup} warm-up"


def _nuts(inference, x_o, args) -> tuple[torch.Tensor, str]:
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
    return samples.float(), (f"NUTS R̂ {rhat:.3f}, {result.num_divergences} div., "
                             f"{steps:.1f} grad/transition")


def metrics(samples: torch.Tensor, reference: torch.Tensor, theta_true) -> dict[str, float]:
    """C2ST (against as many reference draws as there are samples) and log p(θ_true | x_o)."""
    try:
        return dict(c2st=c2st(samples, reference[: samples.shape[0]]),
                    lp=log_posterior_at_true_theta(theta_true, samples))
    except ValueError as error:  # too few or collapsed draws
        print(f"  metrics failed: {error}")
        return dict(c2st=math.nan, lp=math.nan)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:  # noqa: C901 - a linear script
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
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results"
                                                / "scandal.md"))
    args = parser.parse_args(argv)
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
    baseline = {
        "reference posterior": (c2st(reference_2, reference),
                                log_posterior_at_true_theta(theta_true, reference_2)),
        "prior": (c2st(prior_draws, reference),
                  log_posterior_at_true_theta(theta_true, prior_draws)),
    }
    zero_score_error = float((score_test**2).sum(1).mean())
    print(f"x_o: {args.trials} iid trials at θ = {theta_true.tolist()}; reference posterior "
          f"mean {[round(v, 2) for v in reference.mean(0).tolist()]}, "
          f"std {[round(v, 2) for v in reference.std(0).tolist()]}")
    for name, (acc, lp) in baseline.items():
        print(f"baseline {name:20s} C2ST {acc:.3f}   log p(θ_true|x_o) {lp:.2f}")
    print(f"held-out score error of the zero score: {zero_score_error:.3f}")

    arms = [(m, a) for m in args.models for a in (0.0, alpha)]
    results: dict[tuple[str, float, int], dict] = {}
    for n in args.simulations:
        _rule(f"{n} simulations")
        theta, x, score = theta_all[:n], x_all[:n], score_all[:n]
        for model, a in arms:
            label = f"{MODELS[model]}, α={a:g}"
            inference, train_s = train(model, a, theta, x, score, simulator, args)
            estimator = inference._neural_net
            score_error = held_out_score_error(model, estimator, theta_test, x_test, score_test)
            epochs = inference.summary["epochs_trained"][-1]
            print(f"{label:24s} trained {epochs} epochs in {train_s:6.1f} s; held-out score "
                  f"error {score_error:.3f}", flush=True)
            torch.manual_seed(args.seed)
            start = time.perf_counter()
            samples, note = sample_posterior(model, inference, x_o, args)
            sample_s = time.perf_counter() - start
            r = dict(
                **metrics(samples, reference, theta_true),
                train_s=train_s, sample_s=sample_s, epochs=epochs, score_error=score_error,
                note=note,
            )
            results[(model, a, n)] = r
            print(f"{label:24s} sampled in {sample_s:6.1f} s ({note}); C2ST {r['c2st']:.3f}, "
                  f"log p(θ_true|x_o) {r['lp']:.2f}", flush=True)

    columns = [f"N = {n}" for n in args.simulations]
    rows = lambda fn: [  # noqa: E731
        [MODELS[m], "yes" if a > 0 else "no"]
        + [fn(results[(m, a, n)]) for n in args.simulations] for m, a in arms
    ]
    quality = markdown_table(["model", "SCANDAL", *columns],
                             rows(lambda r: f"{r['c2st']:.3f} / {r['lp']:.2f}"))
    scores = markdown_table(["model", "SCANDAL", *columns],
                            rows(lambda r: f"{r['score_error']:.3f}"))
    timing = markdown_table(["model", "SCANDAL", *columns],
                            rows(lambda r: f"{r['train_s']:.0f} s ({r['epochs']} ep.) / "
                                           f"{r['sample_s']:.0f} s"))
    notes = "\n".join(
        f"- {MODELS[m]}, α={a:g}, N={n}: {results[(m, a, n)]['note']}"
        for m, a in arms for n in args.simulations
    )
    nsf_sampler = {
        "rejection": "rejection sampling from the prior",
        "nuts": "the same Pyro NUTS runner on sbi's NLE potential",
        "slice": f"slice_np_vectorized ({args.sbi_chains} chains, {args.sbi_warmup} warm-up)",
    }[args.nsf_sampler]
    total = time.perf_counter() - started
    command = "python -m benchmarks.scandal " + " ".join(sys.argv[1:] if argv is None else argv)
    report = f"""# SCANDAL benchmark on ParticleDecay

Command: `{command.strip()}` ({args.threads} torch thread(s), torch {torch.__version__},
total {total / 60:.1f} min).

Setup: d = {simulator.data_dim}, n = {simulator.manifold_dim}, θ ∈ [-1, 1]³; x_o = {args.trials}
iid trials at θ = 0; SCANDAL weight α = {alpha:g} (score term α · ‖∇θ log q − t‖², summed over
θ's components, added to the per-sample NLL). Epoch budget E = {args.epochs} (M-flow:
E/2 manifold + {args.density_epochs or args.epochs // 2} density epochs, sequential; NSF: E
epochs), early stopping (patience 20) on the validation loss, batch {args.batch}, learning rate
{args.lr:g}. M-flow: {args.outer_layers} outer + {args.inner_layers} inner couplings; NSF:
{args.outer_layers + args.inner_layers} couplings; hidden features {args.hidden}. Posterior:
{args.samples} draws; M-flow by NUTS on the chart potential ({args.chains} chains,
{args.warmup} warm-up, max tree depth {args.max_tree_depth}); NSF by sbi
{nsf_sampler}.

## Posterior quality: C2ST vs reference / log p(θ_true | x_o)

C2ST: 0.5 is best. log p(θ_true | x_o): higher is better. Baselines: reference posterior
(a second draw) {baseline['reference posterior'][0]:.3f} / {baseline['reference posterior'][1]:.2f};
prior {baseline['prior'][0]:.3f} / {baseline['prior'][1]:.2f}.

{quality}

## Held-out score error mean ‖∇θ log q(x|θ) − t‖² (1000 fresh simulations)

Zero score (no θ-dependence): {zero_score_error:.3f}.

{scores}

## Wall times: training (epochs run) / posterior sampling

{timing}

Sampler notes:

{notes}
"""
    _rule("results")
    print(report)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    print(f"written to {output}; total {total:.0f} s")


if __name__ == "__main__":
    main()
