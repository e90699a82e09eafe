"""sbi's estimator contract: shapes, broadcasting, deepcopy, plain NLE training + MCMC."""

import copy

import pytest
import torch
from sbi.inference import NLE
from sbi.utils import BoxUniform

import sbi_mflow

MODELS = ["mflow", "meflow", "pie", "pie-conditional"]


def _estimator(model, data_dim=4, param_dim=2):
    batch_x = torch.randn(100, data_dim)
    batch_theta = torch.rand(100, param_dim)
    options = dict(outer_layers=2, inner_layers=2, hidden_features=16,
                   encoder_hidden_features=16, encoder_blocks=1)
    return sbi_mflow.manifold_likelihood_nn(model, 2, **options)(batch_theta, batch_x)


@pytest.mark.parametrize("model", MODELS)
def test_log_prob_sample_and_loss_shapes(model):
    estimator = _estimator(model)
    x, theta = torch.randn(7, 4), torch.rand(7, 2)
    assert estimator.log_prob(x, theta).shape == (1, 7)
    assert estimator.log_prob(torch.randn(3, 7, 4), theta).shape == (3, 7)
    assert estimator.log_prob(torch.randn(3, 7, 4), theta.expand(3, 7, 2)).shape == (3, 7)
    assert estimator.log_prob(x, theta[:1]).shape == (1, 7)  # broadcast θ
    assert estimator.log_prob(x[:1], theta).shape == (1, 7)  # broadcast x
    assert estimator.chart_log_prob(torch.randn(3, 7, 4), theta).shape == (3, 7)
    assert estimator.loss(x, theta).shape == (7,)
    assert estimator.sample((5,), theta).shape == (5, 7, 4)
    assert estimator.sample((2, 3), theta[:2]).shape == (2, 3, 2, 4)
    assert estimator.encode(x, theta).shape == (7, 2)
    assert estimator.reconstruction_error(x, theta).shape == (7,)


@pytest.mark.parametrize("model", MODELS)
def test_identical_inputs_give_identical_log_probs_and_batching_is_consistent(model):
    estimator = _estimator(model).eval()
    x, theta = torch.randn(1, 4).expand(5, 4), torch.rand(1, 2).expand(5, 2)
    values = estimator.log_prob(x, theta)[0]
    # float32 rows of one batch: at most a few ulps apart (SIMD lane position; measured 0);
    # allclose's atol 1e-5 + rtol 1e-5·|v| is ≥ 100 ulps of these values (|v| ≈ 2 to 1e3)
    assert torch.allclose(values, values[0].expand(5), atol=1e-5)
    x, theta = torch.randn(6, 4), torch.rand(6, 2)
    batched = estimator.log_prob(x, theta)[0]
    single = torch.cat([estimator.log_prob(x[i : i + 1], theta[i : i + 1])[0] for i in range(6)])
    # batch size 1 vs 6 takes other matmul kernels: measured ≤ 2e-6 for |v| ≤ 5 and ≤ 8e-3
    # for PIE's |v| ≤ 7e4 (≤ 4 ulps there); 1e-4 + 1e-4·|v| leaves ≥ 100x
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_deepcopy_keeps_the_function(model):
    estimator = _estimator(model).eval()
    clone = copy.deepcopy(estimator)
    x, theta = torch.randn(5, 4), torch.rand(5, 2)
    # identical weights, inputs and kernels: bit for bit (float32 defaults are slack)
    torch.testing.assert_close(clone.log_prob(x, theta), estimator.log_prob(x, theta))


def test_unconditional_density_estimation_on_a_manifold():
    batch_x = torch.randn(64, 3)
    estimator = sbi_mflow.manifold_likelihood_nn("mflow", 2, outer_layers=2, inner_layers=2)(
        None, batch_x
    )
    assert not estimator.is_conditional
    assert estimator.log_prob(batch_x[:5]).shape == (1, 5)
    assert estimator.sample((10,)).shape == (10, 3)
    assert estimator.loss(batch_x[:5]).shape == (5,)
    with pytest.raises(ValueError, match="unconditional"):
        estimator.log_prob(batch_x[:5], torch.rand(5, 1))


def _circle_simulator(theta: torch.Tensor) -> torch.Tensor:
    """x on a circle in R^3 (n=1): angle ~ N(θ_0, 0.3²), radius 1 + θ_1/2, third coord fixed."""
    angle = theta[:, 0] + 0.3 * torch.randn(theta.shape[0])
    radius = 1.0 + 0.5 * theta[:, 1]
    return torch.stack([radius * angle.cos(), radius * angle.sin(), 0.5 * radius], dim=1)


@pytest.mark.parametrize("model", ["mflow", "pie"])
def test_plain_sbi_nle_trains_and_slice_mcmc_gives_finite_samples(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # sbi writes tensorboard logs into the working directory
    prior = BoxUniform(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 1.0]))
    theta = prior.sample((500,))
    x = _circle_simulator(theta)
    build = sbi_mflow.manifold_likelihood_nn(model, 1, outer_layers=2, inner_layers=2,
                                             hidden_features=16)
    inference = NLE(prior, density_estimator=build, show_progress_bars=False)
    estimator = inference.append_simulations(theta, x).train(max_num_epochs=3)
    assert isinstance(estimator, sbi_mflow.ManifoldFlowEstimator)
    posterior = inference.build_posterior(
        mcmc_method="slice_np_vectorized",
        mcmc_parameters=dict(num_chains=4, warmup_steps=10, thin=1,
                             init_strategy="resample",
                             init_strategy_parameters={"num_candidate_samples": 200}),
    )
    x_o = _circle_simulator(torch.tensor([[0.2, 0.5]]).expand(3, 2))
    samples = posterior.sample((40,), x=x_o, show_progress_bars=False)
    assert samples.shape == (40, 2)
    assert torch.isfinite(samples).all()
    assert prior.support.check(samples).all()
