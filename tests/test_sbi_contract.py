"""The posterior keeps sbi 0.27's contract: sbi's build_posterior arguments, sbi's own
estimators trained through ManifoldNLE, batched observations, sbi's calibration diagnostics
and its multi-round loop.

Truth: the posterior of the trained estimator's own likelihood on a dense θ grid (p = 1,
PolynomialSurface), against which every sampler's draws are compared by their mean and
standard deviation.
"""

import math
import warnings

import pytest
import torch
from sbi.diagnostics import check_sbc, run_sbc, run_tarp
from sbi.inference import MCMCPosterior
from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters

import sbi_mflow
from sbi_mflow.sampling import ConvergenceWarning, ManifoldPosterior, NUTSPosterior
from simulators import PolynomialSurface

NUM_TRIALS = 5
GRID = torch.linspace(-1.0, 1.0, 4001, dtype=torch.float64)[1:-1].unsqueeze(1)


def _train(density_estimator, num: int = 1500, epochs: int = 15, seed: int = 0):
    simulator = PolynomialSurface()
    torch.manual_seed(seed)
    theta = simulator.prior.sample((num,))
    inference = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=density_estimator,
                                      show_progress_bars=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # short training on purpose
        inference.append_simulations(theta, simulator(theta)).train(
            max_num_epochs=epochs, training_batch_size=100)
    return simulator, inference


@pytest.fixture(scope="module")
def maf():
    """sbi's default MAF trained through ManifoldNLE, and observations."""
    simulator, inference = _train("maf")
    torch.manual_seed(1)
    theta_o = torch.tensor([[0.3], [-0.5], [0.6]])
    x_o = simulator(theta_o.repeat_interleave(NUM_TRIALS, 0)).reshape(3, NUM_TRIALS, 3)
    return simulator, inference, x_o


def _grid_moments(log_likelihood) -> tuple[float, float]:
    """Mean and sd of θ under the grid posterior ∝ exp(log_likelihood(θ)) on the prior box."""
    with torch.no_grad():
        values = log_likelihood(GRID).double()
    weights = torch.softmax(values, 0)
    mean = float((weights * GRID[:, 0]).sum())
    sd = math.sqrt(float((weights * (GRID[:, 0] - mean) ** 2).sum()))
    return mean, sd


def _exact_moments(estimator, x_o: torch.Tensor) -> tuple[float, float]:
    """Grid moments of the estimator's own posterior for x_o (T, d) (uniform prior)."""

    def log_likelihood(theta):
        inputs = x_o.unsqueeze(1).expand(-1, theta.shape[0], -1)
        return estimator.log_prob(inputs, condition=theta.float()).sum(0)

    return _grid_moments(log_likelihood)


def _assert_moments(draws: torch.Tensor, truth: tuple[float, float], ess: float) -> None:
    """Draws' mean and sd against the grid's: within 5 Monte-Carlo standard errors, SE(mean)
    = sd/√ESS and SE(sd) ≈ sd/√(2 ESS) (the draws are correlated; ``ess`` is a lower bound
    on their effective size)."""
    mean, sd = truth
    draws = draws.double().flatten()
    assert abs(float(draws.mean()) - mean) < 5 * sd / math.sqrt(ess), (float(draws.mean()), mean)
    assert abs(float(draws.std()) - sd) < 5 * sd / math.sqrt(2 * ess), (float(draws.std()), sd)


def test_sbis_default_maf_gets_the_nuts_posterior_on_its_exact_likelihood(maf):
    simulator, inference, x_o = maf
    posterior = inference.build_posterior(num_chains=4, min_transitions=250)
    assert isinstance(posterior, NUTSPosterior) and not isinstance(posterior, ManifoldPosterior)
    draws = posterior.sample((1000,), x=x_o[0], seed=0)
    assert draws.shape == (1000, 1) and draws.dtype == torch.float32
    # 4 chains × 250 draws: ESS ≥ 300 (measured > 800)
    assert posterior.convergence[0].min_ess_bulk >= 300
    _assert_moments(draws, _exact_moments(inference._neural_net, x_o[0]), ess=300)


def test_sbis_own_mcmc_methods_run_sbis_posterior_on_the_same_likelihood(maf):
    _, inference, x_o = maf
    truth = _exact_moments(inference._neural_net, x_o[0])
    slice_posterior = inference.build_posterior(
        mcmc_method="slice_np_vectorized",
        mcmc_parameters=dict(num_chains=4, warmup_steps=50, thin=5),
    )
    assert isinstance(slice_posterior, MCMCPosterior)
    torch.manual_seed(0)
    draws = slice_posterior.sample((800,), x=x_o[0], show_progress_bars=False)
    # slice sampling thinned 5×: ESS ≥ 200 of 800 (measured ≈ 600)
    _assert_moments(draws, truth, ess=200)
    as_parameters = inference.build_posterior(
        posterior_parameters=MCMCPosteriorParameters(num_chains=4, warmup_steps=50))
    assert isinstance(as_parameters, MCMCPosterior)
    nuts = inference.build_posterior(posterior_parameters=MCMCPosteriorParameters(
        method="nuts_pyro", num_chains=4, warmup_steps=60, thin=2,
        init_strategy_parameters={"num_candidate_samples": 500}))
    assert isinstance(nuts, NUTSPosterior)
    assert (nuts.config.num_chains, nuts.config.warmup_steps, nuts.config.thin,
            nuts.config.num_init_candidates) == (4, 60, 2, 500)
    hmc = inference.build_posterior(mcmc_method="hmc_pyro", num_chains=2)
    assert hmc.config.method == "hmc" and hmc.config.num_chains == 2
    with pytest.raises(ValueError, match="init_strategy='proposal'"):
        inference.build_posterior(posterior_parameters=MCMCPosteriorParameters(
            method="nuts_pyro", init_strategy="proposal"))
    with pytest.raises(TypeError, match="Unknown arguments"):
        inference.build_posterior(mcmc_method="slice_np", num_chains=3)


def test_sample_batched_gives_each_observation_its_own_posterior(maf):
    _, inference, x_o = maf
    posterior = inference.build_posterior(num_chains=4, warmup_steps=100, thin=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # short chains on purpose
        draws = posterior.sample_batched((600,), x=x_o, seed=0)  # (B, T, d): T trials each
    assert draws.shape == (600, 3, 1)
    assert len(posterior.convergence) == 3
    for b in range(3):
        # ESS ≥ 150 of 600 draws thinned 2× per observation (measured ≥ 300)
        ess = posterior.convergence[b].min_ess_bulk
        assert ess >= 150
        _assert_moments(draws[:, b], _exact_moments(inference._neural_net, x_o[b]), ess=150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one_trial = posterior.sample_batched((200,), x=x_o[:, 0], seed=0)  # (B, d)
    assert one_trial.shape == (200, 3, 1)
    # log_prob_batched equals log_prob observation by observation (same float32 network on
    # batches of different sizes: equal up to reduction order)
    theta = draws[:4]
    batched = posterior.log_prob_batched(theta, x=x_o)
    assert batched.shape == (4, 3)
    single = torch.stack([posterior.log_prob(theta[:, b], x=x_o[b]) for b in range(3)], 1)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_manifold_posterior_batches_observations_and_matches_sbis_slice_sampler():
    """M-flow: NUTS on the chart potential, batched, against sbi's slice sampler on the
    exact likelihood (which includes the θ-independent decoder term): the same posterior."""
    build = sbi_mflow.manifold_likelihood_nn("mflow", 2, outer_layers=2, inner_layers=2,
                                             hidden_features=16, num_blocks=1)
    simulator, inference = _train(build, num=1000, epochs=6)
    posterior = inference.build_posterior()
    assert isinstance(posterior, ManifoldPosterior)
    torch.manual_seed(2)
    x_o = simulator(torch.tensor([[0.2], [-0.4]]).repeat_interleave(NUM_TRIALS, 0))
    x_o = x_o.reshape(2, NUM_TRIALS, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        draws = posterior.sample_batched((400,), x=x_o, seed=0, num_chains=4, thin=2)
    estimator = inference._neural_net

    def chart_moments(x):
        u = estimator.encode(x)
        return _grid_moments(lambda theta: estimator.latent_log_prob(
            u.repeat(theta.shape[0], 1), theta.float().repeat_interleave(len(u), 0)
        ).reshape(theta.shape[0], -1).sum(-1))

    for b in range(2):
        # 400 draws thinned 2×: ESS ≥ 100
        _assert_moments(draws[:, b], chart_moments(x_o[b]), ess=100)
    slice_posterior = inference.build_posterior(
        mcmc_method="slice_np_vectorized", mcmc_parameters=dict(num_chains=4, warmup_steps=30))
    torch.manual_seed(0)
    slice_draws = slice_posterior.sample((200,), x=x_o[0], show_progress_bars=False)
    _assert_moments(slice_draws, chart_moments(x_o[0]), ess=50)


def test_sbis_calibration_diagnostics_take_the_batched_path(maf):
    simulator, inference, _ = maf
    posterior = inference.build_posterior(num_chains=4, warmup_steps=100, thin=2)
    torch.manual_seed(5)
    thetas = simulator.prior.sample((20,))
    xs = simulator(thetas)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Nn]on-batched.*")
        warnings.filterwarnings("ignore", message="Number of SBC samples")
        warnings.simplefilter("ignore", ConvergenceWarning)
        ranks, dap = run_sbc(thetas, xs, posterior, num_posterior_samples=100,
                             show_progress_bar=False)
        ecp, alpha = run_tarp(thetas, xs, posterior, num_posterior_samples=100,
                              show_progress_bar=False)
    assert ranks.shape == (20, 1) and dap.shape == (20, 1)
    assert bool(((ranks >= 0) & (ranks <= 100)).all())
    stats = check_sbc(ranks, thetas, dap, num_posterior_samples=100)
    assert set(stats) >= {"ks_pvals", "c2st_ranks", "c2st_dap"}
    assert ecp.shape == alpha.shape and bool(((ecp >= 0) & (ecp <= 1)).all())


def test_multi_round_loop_with_the_posterior_as_proposal(maf):
    """sbi's sequential NLE loop: round 1 draws θ from the round-0 posterior at x_o and
    trains on round 1 only (discard_prior_samples); its posterior is built and sampled."""
    _, _, x_o = maf
    simulator, inference = _train("maf", num=600, epochs=5)
    proposal = inference.build_posterior(num_chains=4, warmup_steps=50, thin=1)
    proposal.set_default_x(x_o[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theta = proposal.sample((300,), seed=0)
    inference.append_simulations(theta, simulator(theta), from_round=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        inference.train(max_num_epochs=3, discard_prior_samples=True,
                        training_batch_size=100)
    assert len(inference.train_indices) + len(inference.val_indices) == 300  # round 1 only
    posterior = inference.build_posterior(num_chains=4, warmup_steps=50, thin=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        draws = posterior.sample((100,), x=x_o[0], seed=0)
    assert draws.shape == (100, 1) and bool(simulator.prior.support.check(draws).all())
