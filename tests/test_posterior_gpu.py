"""Posterior sampling with an estimator trained on a CUDA GPU (``-m gpu``; needs CUDA).

The chart potential is sampled on the CPU by default (``sampling_device="auto"``), or on
the GPU when asked; either way samples, log-probabilities and the MAP come back on the
estimator's device in the prior's dtype, and a prior built on the CPU is moved for the user.
"""

import warnings

import pytest
import torch

import sbi_mflow
from sbi_mflow.priors import prior_device, prior_on_device
from simulators import PolynomialSurface

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def trained_on_cuda():
    """(simulator, CPU prior, inference, estimator on cuda, x_o on cuda)."""
    torch.manual_seed(0)
    simulator = PolynomialSurface()
    prior = simulator.prior
    theta = prior.sample((1000,))
    x = simulator(theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        inference = sbi_mflow.ManifoldNLE(
            prior_on_device(prior, "cuda"),
            density_estimator=sbi_mflow.manifold_likelihood_nn(
                "mflow", 2, outer_layers=2, inner_layers=2, hidden_features=16),
            device="cuda", show_progress_bars=False, tracker=sbi_mflow.NullTracker(),
        )
        estimator = inference.append_simulations(theta, x).train(max_num_epochs=3)
    assert next(estimator.parameters()).device.type == "cuda"
    x_o = simulator(simulator.default_theta.expand(10, 1)).cuda()
    return simulator, prior, inference, estimator, x_o


def _check_draws(samples, prior, shape):
    assert samples.shape == shape and samples.device.type == "cuda"
    assert samples.dtype == prior.sample((1,)).dtype and torch.isfinite(samples).all()
    assert prior.support.check(samples.cpu()).all()


def test_auto_samples_the_chart_potential_on_the_cpu_and_returns_cuda_tensors(trained_on_cuda):
    _, prior, _, estimator, x_o = trained_on_cuda
    assert prior_device(prior).type == "cpu"
    posterior = sbi_mflow.manifold_posterior(estimator, prior, num_chains=4, warmup_steps=30,
                                             thin=1, num_init_candidates=500,
                                             check_convergence=False)
    assert posterior.sampling_device == torch.device("cpu")
    assert next(posterior.potential_fn.estimator.parameters()).device.type == "cpu"
    assert next(estimator.parameters()).device.type == "cuda"  # the caller's stays put
    samples = posterior.sample((40,), x=x_o, seed=0)
    _check_draws(samples, prior, (40, 1))
    log_prob = posterior.log_prob(samples, x=x_o)
    assert log_prob.device.type == "cuda" and torch.isfinite(log_prob).all()
    map_theta = posterior.map(x=x_o, num_init_samples=200)
    assert map_theta.device.type == "cuda" and map_theta.shape == (1,)


def test_sampling_on_the_gpu_gives_the_same_potential(trained_on_cuda):
    _, prior, _, estimator, x_o = trained_on_cuda
    options = dict(num_chains=4, warmup_steps=30, thin=1, num_init_candidates=500,
                   check_convergence=False)
    on_gpu = sbi_mflow.manifold_posterior(estimator, prior, sampling_device="cuda", **options)
    on_cpu = sbi_mflow.manifold_posterior(estimator, prior, sampling_device="cpu", **options)
    assert on_gpu.sampling_device == torch.device("cuda", torch.cuda.current_device())
    assert prior_device(on_gpu.prior).type == "cuda"
    samples = on_gpu.sample((40,), x=x_o, seed=0)
    _check_draws(samples, prior, (40, 1))
    assert str(on_gpu.potential_fn.device).startswith("cuda")
    theta = torch.linspace(-0.9, 0.9, 7).unsqueeze(1)
    # the same float32 network on two devices: different kernels and summation orders,
    # |log p| ≈ 30 for 10 trials → agreement to ~1e-4 relative; allow 1e-3 absolute + rel
    torch.testing.assert_close(on_gpu.log_prob(theta, x=x_o), on_cpu.log_prob(theta, x=x_o),
                               atol=1e-3, rtol=1e-4)


def test_trainer_posterior_and_exact_potential_on_cuda(trained_on_cuda):
    _, prior, inference, estimator, x_o = trained_on_cuda
    posterior = inference.build_posterior(num_chains=2, warmup_steps=20, thin=1,
                                          num_init_candidates=200, check_convergence=False)
    _check_draws(posterior.sample((10,), x=x_o, seed=0), prior, (10, 1))
    exact = sbi_mflow.manifold_posterior(estimator, prior, exact=True, num_chains=2,
                                         warmup_steps=10, thin=1, num_init_candidates=100,
                                         check_convergence=False)
    assert exact.sampling_device.type == "cuda"  # "auto": the exact potential stays on cuda
    _check_draws(exact.sample((4,), x=x_o, seed=0), prior, (4, 1))


@pytest.mark.parametrize("sampling_device", ["cpu", "cuda"])
def test_sample_batched_with_an_estimator_on_cuda(trained_on_cuda, sampling_device):
    simulator, prior, _, estimator, _ = trained_on_cuda
    posterior = sbi_mflow.manifold_posterior(
        estimator, prior, sampling_device=sampling_device, num_chains=4, warmup_steps=30,
        thin=1, num_init_candidates=500, check_convergence=False)
    torch.manual_seed(1)
    xs = simulator(prior.sample((3,))).cuda()
    samples = posterior.sample_batched((20,), x=xs)
    assert samples.shape == (20, 3, 1) and samples.device.type == "cuda"
    assert torch.isfinite(samples).all() and prior.support.check(samples.cpu()).all()
    log_prob = posterior.log_prob_batched(samples, x=xs)
    assert log_prob.shape == (20, 3) and log_prob.device.type == "cuda"
    # each observation's batched log-density is its own one-observation log-density
    for b in range(3):
        torch.testing.assert_close(log_prob[:, b], posterior.log_prob(samples[:, b], x=xs[b]),
                                   atol=1e-4, rtol=1e-5)  # same float32 kernels, other batch
