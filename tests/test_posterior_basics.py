"""Cheap posterior checks on untrained estimators: HMC, exact potential, seeding, errors."""

import warnings

import numpy as np
import pytest
import torch
from helpers import perturbed_estimator
from sbi.utils import BoxUniform

from sbi_mflow.diagnostics import ConvergenceWarning
from sbi_mflow.posterior import manifold_posterior


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # short chains on purpose
        yield
    torch.set_num_threads(threads)


def _setup(model="mflow"):
    estimator = perturbed_estimator(model, data_dim=4, manifold_dim=2, param_dim=2,
                                    dtype=torch.float32, scale=0.05)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    with torch.no_grad():
        x_o = estimator.sample((5,), torch.tensor([[0.3, -0.2]]))[:, 0]
    return estimator, prior, x_o


def test_same_seed_gives_identical_draws_and_hmc_works():
    estimator, prior, x_o = _setup()
    posterior = manifold_posterior(estimator, prior, num_chains=2, warmup_steps=20,
                                   check_manifold=False, method="hmc", num_steps=5)
    first = posterior.sample((20,), x=x_o, seed=3)
    second = posterior.sample((20,), x=x_o, seed=3)
    torch.testing.assert_close(first, second)
    assert not torch.equal(first, posterior.sample((20,), x=x_o, seed=4))
    idata = posterior.sample_arviz(20, x=x_o, seed=0)
    stats = idata.sample_stats
    # HMC: fixed trajectory length (step size × steps) once adaptation has ended
    steps = stats["n_steps"].values
    assert (steps == steps[:, :1]).all() and (steps >= 1).all()
    assert np.isnan(stats["tree_depth"].values).all()  # no tree for HMC
    assert idata.posterior.attrs["sampler"] == "pyro hmc"
    assert idata.posterior["theta"].shape == (2, 10, 2)
    assert prior.support.check(torch.as_tensor(idata.posterior["theta"].values)).all()


def test_pie_conditional_posterior_samples_with_the_exact_potential():
    estimator, prior, x_o = _setup("pie-conditional")
    with pytest.warns(UserWarning, match="conditions the manifold on θ"):
        posterior = manifold_posterior(estimator, prior, num_chains=1, warmup_steps=5,
                                       num_init_candidates=20)
    samples = posterior.sample((5,), x=x_o, seed=0)
    assert samples.shape == (5, 2) and torch.isfinite(samples).all()
    assert posterior.inference_data.posterior.attrs["potential"] == "ExactLikelihoodPotential"


def test_posterior_option_and_input_errors():
    estimator, prior, x_o = _setup()
    with pytest.raises(ValueError, match="method"):
        manifold_posterior(estimator, prior, method="slice")
    with pytest.raises(ValueError, match="num_chains"):
        manifold_posterior(estimator, prior, num_chains=0)
    with pytest.raises(ValueError, match="param_names"):
        manifold_posterior(estimator, prior, param_names=["a"])
    posterior = manifold_posterior(estimator, prior, check_manifold=False,
                                   param_names=["alpha", "beta"])
    with pytest.raises(TypeError, match="Unknown sampler options"):
        posterior.sample((4,), x=x_o, num_walkers=3)
    with pytest.raises(ValueError, match="num_samples"):
        posterior.sample_arviz(0, x=x_o)
    with pytest.raises(ValueError, match=r"x_o must have shape \(num_trials, 4\)"):
        posterior.sample((4,), x=torch.zeros(3, 2))
    with pytest.raises(NotImplementedError, match="iid trials"):
        posterior.sample_batched((4,), x=x_o)
    idata = posterior.sample_arviz(8, x=x_o, seed=0, num_chains=1, warmup_steps=5)
    assert list(idata.posterior["theta_dim"].values) == ["alpha", "beta"]


@pytest.mark.parametrize("vectorize", [True, False])
def test_chains_sample_an_analytic_gaussian_vectorised_or_not(vectorize):
    """NUTS on U(z) = ½ Σ_k (z_k − μ_k)² / σ_k²: means and variances of N(μ, diag σ²)."""
    import arviz as az

    from sbi_mflow.nuts import run_chains

    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    sigma = torch.tensor([0.3, 2.0], dtype=torch.float64)
    rows_per_call = []

    def energy(z):
        rows_per_call.append(z.shape[0])
        return 0.5 * (((z - mu) / sigma) ** 2).sum(-1)

    import pyro

    pyro.set_rng_seed(0)
    num_chains, num_draws = 6, 400
    inits = torch.randn(num_chains, 2, dtype=torch.float64) * 2
    result = run_chains(energy, inits, num_draws=num_draws, warmup_steps=200,
                        vectorize_chains=vectorize)
    draws = result.samples
    assert draws.shape == (num_chains, num_draws, 2) and result.vectorized is vectorize
    # each leapfrog step evaluates all chains in one call (vectorised) or one chain
    assert set(rows_per_call) == ({num_chains} if vectorize else {1})
    ess = az.ess(az.convert_to_dataset({"z": draws.numpy()}), method="bulk")["z"].values
    flat = draws.reshape(-1, 2)
    standard_error = sigma / torch.as_tensor(ess).sqrt()
    assert ((flat.mean(0) - mu).abs() < 4 * standard_error).all()
    torch.testing.assert_close(flat.std(0), sigma, rtol=0.12, atol=0)
    assert float(az.rhat(az.convert_to_dataset({"z": draws.numpy()}))["z"].max()) < 1.02
    # per-chain statistics: lp is −U of each chain's own draw; H ≥ U at the start
    lp = torch.as_tensor(result.stats["lp"])
    torch.testing.assert_close(lp, -energy(draws))
    assert (result.stats["energy"][:, 1:] >= -result.stats["lp"][:, :-1] - 1e-9).all()
    assert result.stats["n_steps"].shape == (num_chains, num_draws)
