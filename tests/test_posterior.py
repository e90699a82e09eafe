"""NUTS posterior on a trained M-flow for PolynomialSurface (d=3, n=2, p=1).

One small model is trained once per module with plain sbi ``NLE`` (2000 simulations, a few
epochs); the sampler is then checked for convergence (R̂, divergences), agreement of the
chart and exact potentials' posteriors (C2ST), the cost claim (outer flow never runs per
NUTS step), the sbi interface, the MAP against a dense grid, and ArviZ export.
"""

import math
import warnings

import arviz as az
import numpy as np
import pytest
import torch
from sbi.inference import NLE, MCMCPosterior
from sbi.utils import mcmc_transform
from sbi.utils.metrics import c2st

import sbi_mflow
from sbi_mflow.sampling import ConvergenceWarning, ManifoldPosterior, manifold_posterior
from sbi_mflow.sampling.arviz_data import arviz_major_version, group_names, load_netcdf
from simulators import PolynomialSurface

NUM_TRIALS = 20


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small batches: on the shared 2-core machine 2 torch threads were ~10x slower than 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(simulator, estimator, x_o (20, 3), training x) for PolynomialSurface."""
    torch.manual_seed(0)
    simulator = PolynomialSurface()
    theta = simulator.prior.sample((2000,))
    x = simulator(theta)
    build = sbi_mflow.manifold_likelihood_nn(
        "mflow", 2, outer_layers=3, inner_layers=2, hidden_features=16, num_blocks=1
    )
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.chdir(tmp_path_factory.mktemp("sbi-logs"))  # sbi writes tensorboard logs here
        warnings.simplefilter("ignore", UserWarning)  # "max_num_epochs reached"
        inference = NLE(simulator.prior, density_estimator=build, show_progress_bars=False)
        estimator = inference.append_simulations(theta, x).train(
            max_num_epochs=12, training_batch_size=100
        )
    torch.manual_seed(1)
    x_o = simulator(simulator.default_theta.expand(NUM_TRIALS, 1))
    return simulator, estimator, x_o, x[:500]


def _posterior(trained, **options) -> ManifoldPosterior:
    simulator, estimator, _, reference_x = trained
    return manifold_posterior(estimator, simulator.prior, reference_x=reference_x, **options)


@pytest.fixture(scope="module")
def four_chains(trained):
    """(posterior, ArviZ data) of 4 NUTS chains × 600 draws (default chain mode, product);
    ConvergenceWarning → error."""
    _, _, x_o, _ = trained
    posterior = _posterior(trained, num_chains=4, warmup_steps=150, thin=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        idata = posterior.sample_arviz(4 * 600, x=x_o, seed=0)
    return posterior, idata


def test_four_chains_converge_without_divergences_and_export_to_arviz(
    trained, four_chains, tmp_path
):
    _, _, x_o, _ = trained
    _, idata = four_chains
    theta = idata.posterior["theta"]
    assert theta.dims == ("chain", "draw", "theta_dim") and theta.shape == (4, 600, 1)
    assert list(theta["theta_dim"].values) == ["theta_0"]
    # 4 × 600 draws (thin = 1): over 9 seeds R-hat = 1.0025 ± 0.0013 (max 1.0053), ESS ≥ 1600,
    # so 1.01 is 6 sd and 400 is 4x away (these are check_convergence's defaults, which the
    # fixture already turns into errors)
    rhat = float(az.rhat(idata)["theta"].max())
    assert rhat < 1.01
    assert int(idata.sample_stats["diverging"].sum()) == 0
    assert float(az.ess(idata, method="bulk")["theta"].min()) > 400
    # constrained space: inside the prior box [-1, 1] (inclusive: a float32 sigmoid can round
    # to ±1 exactly)
    assert np.abs(theta.values).max() <= 1.0
    stats = idata.sample_stats
    for name in ("step_size", "tree_depth", "energy", "acceptance_rate", "n_steps", "lp"):
        assert stats[name].shape == (4, 600) and np.isfinite(stats[name].values).all()
    assert ((stats["acceptance_rate"] >= 0) & (stats["acceptance_rate"] <= 1)).all()
    # tree depth is consistent with the number of leapfrog steps of each transition
    assert (2.0 ** (stats["tree_depth"] - 1) <= stats["n_steps"]).all()
    assert (stats["n_steps"] <= 2.0 ** stats["tree_depth"] - 1).all()
    # the step size is fixed after warm-up: the same float, so equal (default rtol 1e-7)
    np.testing.assert_allclose(stats["step_size"].values[:, 0], stats["step_size"].values[:, -1])
    # energy = U(start) + ½ r̃², r̃ ~ N(0, 1) per chain (p = 1): the kinetic part is ½ χ²_1
    # (mean ½, sd 1/√2); over 2396 transitions its mean is ½ ± 0.015 (0.06 = 4 sd)
    # (kinetic ≥ 0 is exact for consecutive transitions, thin = 1: energy = fl(U + ½r̃²) ≥ U
    # in float64, and lp is −U, the same float)
    kinetic = stats["energy"].values[:, 1:] + stats["lp"].values[:, :-1]
    assert (kinetic >= 0).all() and abs(kinetic.mean() - 0.5) < 0.06
    # float32 → float64 is exact; the float64 defaults leave nothing to round
    torch.testing.assert_close(torch.as_tensor(idata.observed_data["x_o"].values),
                               x_o.double())
    summary = az.summary(idata)
    # az.summary rounds to 2 decimals, an error ≤ 0.005 that the half-way case can exceed by
    # an ulp: 0.006 (was 0.005) cannot be crossed by rounding
    assert summary.loc["theta[theta_0]", "r_hat"] == pytest.approx(rhat, abs=0.006)
    # netCDF round trip keeps every group and value
    path = str(tmp_path / "posterior.nc")
    idata.to_netcdf(path)
    loaded = load_netcdf(path)
    assert group_names(loaded) == {"posterior", "sample_stats", "observed_data"}
    np.testing.assert_array_equal(loaded.posterior["theta"].values, theta.values)
    np.testing.assert_array_equal(loaded.sample_stats["energy"].values, stats["energy"].values)
    np.testing.assert_array_equal(loaded.sample_stats["diverging"].values,
                                  stats["diverging"].values)
    assert loaded.posterior.attrs["potential"] == "ChartPotential"
    if arviz_major_version() < 1:  # arviz 1.x moved plotting to arviz-plots
        matplotlib = pytest.importorskip("matplotlib")
        matplotlib.use("Agg")
        axes = az.plot_trace(loaded)
        assert axes.shape == (1, 2)
        matplotlib.pyplot.close("all")


def test_chart_and_exact_posteriors_agree(trained, four_chains):
    """NUTS on the chart potential vs sbi's slice sampler on the exact potential (C2ST)."""
    simulator, _, x_o, _ = trained
    chart_posterior, idata = four_chains
    exact = _posterior(trained, exact=True)
    assert type(exact.potential_fn).__name__ == "ExactLikelihoodPotential"
    slice_sampler = MCMCPosterior(
        exact.potential_fn, proposal=simulator.prior,
        theta_transform=mcmc_transform(simulator.prior), method="slice_np_vectorized",
        num_chains=20, warmup_steps=30, thin=1, init_strategy="resample",
        init_strategy_parameters={"num_candidate_samples": 200},
    )
    samples_exact = slice_sampler.sample((1000,), x=x_o, show_progress_bars=False)
    draws = torch.as_tensor(idata.posterior["theta"].values).reshape(-1, 1)  # 2400 draws
    samples_chart = draws[torch.linspace(0, draws.shape[0] - 1, 1000).long()].float()
    accuracy = float(c2st(samples_chart, samples_exact))
    # same posterior (the chart and exact potentials differ by a θ-independent term): C2ST
    # over 8 slice-sampler seeds 0.499 ± 0.012, on the 3 kernels 0.47-0.50, so 0.55 is 4 sd;
    # a mean shift of δ posterior sds gives ≈ Φ(δ/2), so 0.55 fails shifts ≳ 0.25 sd
    assert accuracy <= 0.55, accuracy
    # the samples describe a proper posterior (not both stuck at the same point): its sd is
    # ≈ 0.37 (grid) on all kernels, so 0.05 only fails collapsed samples
    assert samples_chart.std() > 0.05 and samples_exact.std() > 0.05


def _count_calls(module, counter, key):
    """Count forward calls (hooks) and inverse calls (wrapped method) of ``module``."""
    module.register_forward_hook(lambda *args: counter.__setitem__(key, counter[key] + 1))
    if hasattr(module, "inverse"):
        inverse = module.inverse

        def counted_inverse(*args, **kwargs):
            counter[key] += 1
            return inverse(*args, **kwargs)

        module.inverse = counted_inverse


def test_outer_flow_runs_only_to_encode_never_per_nuts_step(trained):
    _, _, x_o, _ = trained
    posterior = _posterior(trained, num_chains=1, warmup_steps=30, thin=1, check_manifold=False,
                           check_convergence=False, num_init_candidates=50)
    chart = posterior.potential_fn.estimator.chart
    counter = {"outer": 0, "standardize": 0}
    _count_calls(chart.body, counter, "outer")
    _count_calls(chart.standardize, counter, "standardize")
    posterior.sample((30,), x=x_o, seed=0)
    steps = posterior.chain_result.potential_calls[0]  # one chain
    assert steps > 60  # warm-up + draws, each at least one leapfrog step (measured 161)
    assert counter == {"outer": 1, "standardize": 1}  # the single encoding of x_o
    posterior.sample((30,), x=x_o, seed=1)  # same x: nothing to encode again
    assert counter == {"outer": 1, "standardize": 1}
    # control: the exact potential runs the outer flow at every evaluation
    exact = _posterior(trained, num_chains=1, warmup_steps=3, thin=1, exact=True,
                       check_manifold=False, check_convergence=False, num_init_candidates=5)
    counter_exact = {"outer": 0}
    _count_calls(exact.potential_fn.estimator.chart.body, counter_exact, "outer")
    exact.sample((3,), x=x_o, seed=0)
    assert counter_exact["outer"] >= exact.chain_result.potential_calls[0]


def test_sbi_interface_log_prob_default_x_and_map(trained):
    simulator, estimator, x_o, _ = trained
    posterior = _posterior(trained, num_chains=2, warmup_steps=100, thin=1)
    with pytest.raises(ValueError, match="Observations x are needed"):
        posterior.sample((10,))
    assert posterior.set_default_x(x_o) is posterior
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        samples = posterior.sample((200,), seed=0)
    assert samples.shape == (200, 1) and samples.dtype == torch.float32
    with pytest.warns(ConvergenceWarning, match="Only 3 draws per chain"):
        assert posterior.sample((2, 3), seed=0, warmup_steps=10).shape == (2, 3, 1)
    # log_prob = log prior + Σ chart log-likelihoods (up to a constant), computed directly
    theta = torch.tensor([[-0.5], [0.0], [0.5]])
    expected = simulator.prior.log_prob(theta) + torch.stack([
        estimator.chart_log_prob(x_o, t.expand(NUM_TRIALS, 1)).sum() for t in theta
    ])
    # float32 sums of 20 chart log-likelihoods (|Σ| ≈ 50, ulp 4e-6) by two routes (cached
    # encoding vs the full chart): measured ≤ 1 ulp; atol 1e-3 + 5e-4 is ≥ 100 ulps
    torch.testing.assert_close(posterior.log_prob(theta).float(), expected.detach(),
                               atol=1e-3, rtol=1e-5)
    with pytest.raises(ValueError, match="outside the prior's support"):
        posterior.log_prob(torch.tensor([[1.5]]))
    with pytest.raises(ValueError, match="x_o must have shape"):
        posterior.log_prob(theta, x=torch.zeros(5, 4))
    # MAP: at least as probable as every posterior draw. The best of 200 draws lies ~2e-3 from
    # the mode (posterior sd 0.37), only ~2e-5 below the maximum: the comparison is one of
    # nearly equal float32 values (ulp 4e-6; measured margins 4-10 ulps). 1e-4 (25 ulps) was
    # about the evaluation noise bound of the next test; 1e-3 is that bound, and still fails
    # a MAP more than √(2e-3/7) ≈ 0.017 (0.05 sd) from the mode.
    map_theta = posterior.map()
    assert map_theta.shape == (1,) and map_theta.dtype == torch.float32
    best_sample = posterior.log_prob(samples).max()
    assert posterior.log_prob(map_theta.unsqueeze(0))[0] >= best_sample - 1e-3
    assert posterior.map() is map_theta  # cached for the default x


def test_map_finds_the_maximum_of_the_potential_on_a_dense_grid(trained):
    """The MAP is within tolerance of the maximum of the same potential on a 20 001-point grid.

    Tolerance: the potential sums 20 float32 chart log-likelihoods (|log p| ≈ 50 in all, ulp
    4e-6): rounding of one evaluation is ~50 · 6e-8 · (a few hundred operations) ≈ 1e-4 at
    most (measured: noise sd ≈ 1e-5), so 1e-3 bounds the evaluation noise. The grid itself
    misses the maximum by at most ½ |log p''| (h/2)² ≈ ½ · 7 · (5e-5)² ≈ 1e-8 (posterior sd
    ≈ 0.37 on all kernels, so |log p''| ≈ 7; spacing h = 1e-4).
    """
    _, _, x_o, _ = trained
    posterior = _posterior(trained, check_manifold=False)
    grid = torch.linspace(-0.9999, 0.9999, 20001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        log_p = torch.cat([posterior.log_prob(part, x=x_o) for part in grid.split(4000)])
    best = int(log_p.argmax())
    map_theta = posterior.map(x=x_o)
    map_value = float(posterior.log_prob(map_theta.unsqueeze(0).double(), x=x_o)[0])
    assert map_value >= float(log_p[best]) - 1e-3
    # and it is the same maximum. Not "near the grid's argmax": ~70 grid points (7e-3 wide)
    # lie within 1e-4 of the maximum, so the argmax is a near-tie that float32 noise decides.
    # Instead: the MAP lies in the interval of grid points within 2e-3 of the maximum. Its
    # value is ≥ max − 1e-3, which puts it √2 inside that interval's edge (half-width
    # √(2·2e-3/|log p''|) ≈ 0.023): a margin of 1e-3 in log p, ≥ 10x the evaluation noise,
    # while a MAP in another mode or > 0.025 (0.07 sd) from this one fails.
    near = grid[log_p >= log_p[best] - 2e-3, 0]
    assert float(near.min()) <= float(map_theta[0]) <= float(near.max())


def _grid_mean_and_std(posterior, x_o, points=801):
    """Mean and sd of the 1-D posterior from its log_prob on a fine grid over [-1, 1]."""
    grid = torch.linspace(-0.999, 0.999, points).unsqueeze(1)
    with torch.no_grad():
        log_p = posterior.log_prob(grid, x=x_o).double()
    weights = torch.softmax(log_p, 0)
    mean = (weights * grid[:, 0].double()).sum()
    return float(mean), float(((weights * (grid[:, 0].double() - mean) ** 2).sum()).sqrt())


def test_nuts_draws_match_the_model_posterior_on_a_grid(trained, four_chains):
    _, _, x_o, _ = trained
    posterior, idata = four_chains
    mean, std = _grid_mean_and_std(posterior, x_o)
    samples = torch.as_tensor(idata.posterior["theta"].values).reshape(-1)
    # Monte-Carlo error of the mean with ESS >= 400 is std/20; allow 6 of those
    assert abs(float(samples.mean()) - mean) < 0.3 * std
    # relative SE of the sd with ESS ≥ 400 is ≤ 1/√800 = 0.035: 0.2 is ≥ 5.6 SE (measured
    # ≤ 0.027 on the 3 kernels)
    assert abs(float(samples.std()) / std - 1.0) < 0.2


def test_sbi_mcmc_posterior_works_with_chart_potential_and_exact_log_prob(trained):
    simulator, estimator, x_o, _ = trained
    prior = simulator.prior
    ours = _posterior(trained, num_chains=2)
    transform = mcmc_transform(prior)
    sbi_chart = MCMCPosterior(ours.potential_fn, proposal=prior, theta_transform=transform,
                              method="slice_np_vectorized", num_chains=10, warmup_steps=30,
                              thin=1, init_strategy="resample",
                              init_strategy_parameters={"num_candidate_samples": 500})
    samples = sbi_chart.sample((400,), x=x_o, show_progress_bars=False)
    assert samples.shape == (400, 1) and prior.support.check(samples).all()
    mean, std = _grid_mean_and_std(ours, x_o)
    # 10 slice chains × 40 draws: over 10 seeds the mean is off by −0.01 ± 0.054 sd (max
    # 0.10), so 0.3 sd is 5.5 SE
    assert abs(float(samples.mean()) - mean) < 0.3 * std
    # plain sbi route on the exact log_prob: the estimator inside an NLE posterior
    inference = NLE(prior, show_progress_bars=False)
    sbi_posterior = inference.build_posterior(estimator, prior=prior)
    theta = torch.tensor([[-0.2], [0.3]])
    difference = sbi_posterior.potential(theta, x=x_o) - ours.log_prob(theta, x=x_o).float()
    # θ-independent by construction; float32 values |≈ 35-50| (ulp 4e-6): measured ≤ 2 ulps
    # apart, so 1e-3 (250 ulps) is rounding-proof while a θ-dependent term of 1e-3 fails
    assert math.isclose(float(difference[0]), float(difference[1]), abs_tol=1e-3)


@pytest.mark.slow
def test_default_settings_converge_without_divergences(trained):
    """At the default sampler settings (10 chains, 200 warm-up each, thinned so that each
    chain runs ≥ 1000 transitions): R-hat < 1.01 and no divergence for 4000 draws."""
    _, _, x_o, _ = trained
    posterior = _posterior(trained)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        idata = posterior.sample_arviz(4000, x=x_o, seed=0)
    assert idata.posterior["theta"].shape == (10, 400, 1)
    assert idata.posterior.attrs["thin"] == 3  # ⌈1000 / 400⌉
    # 20 split chains of 200 well-mixed draws: R-hat − 1 has sd ≈ √(2/19)/400 ≈ 1e-3; 1.01
    # is the library's own threshold, checked again after the warnings
    assert float(az.rhat(idata)["theta"].max()) < 1.01
    assert int(idata.sample_stats["diverging"].values.sum()) == 0
