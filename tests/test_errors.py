"""Bad input gets a clear error that names the problem."""

import pytest
import torch

import sbi_mflow


@pytest.fixture
def estimator():
    build = sbi_mflow.manifold_likelihood_nn("mflow", 2, outer_layers=2, inner_layers=2)
    return build(torch.rand(50, 1), torch.randn(50, 4))


def test_manifold_dim_must_be_smaller_than_data_dim():
    build = sbi_mflow.manifold_likelihood_nn("mflow", 3)
    with pytest.raises(ValueError, match="manifold_dim"):
        build(torch.rand(50, 1), torch.randn(50, 3))


def test_unknown_model_and_options_are_rejected():
    with pytest.raises(ValueError, match="Unknown model"):
        sbi_mflow.manifold_likelihood_nn("realnvp", 2)
    with pytest.raises(TypeError):
        sbi_mflow.manifold_likelihood_nn("mflow", 2, num_layers=3)
    with pytest.raises(ValueError, match="linear_layer"):
        sbi_mflow.manifold_likelihood_nn("mflow", 2, linear_layer="svd")


def test_conditional_pie_needs_parameters():
    with pytest.raises(ValueError, match="pie-conditional"):
        sbi_mflow.manifold_likelihood_nn("pie-conditional", 1)(None, torch.randn(20, 3))


def test_wrong_shapes_are_named(estimator):
    with pytest.raises(ValueError, match=r"input \(x\).*last dimension must be 4"):
        estimator.log_prob(torch.randn(5, 3), torch.rand(5, 1))
    with pytest.raises(ValueError, match=r"condition \(θ\).*last dimension must be 1"):
        estimator.log_prob(torch.randn(5, 4), torch.rand(5, 2))
    with pytest.raises(ValueError, match="condition"):
        estimator.log_prob(torch.randn(5, 4))
    with pytest.raises(ValueError, match="u has shape"):
        estimator.decode(torch.randn(5, 3))
    with pytest.raises(ValueError, match="batch_theta"):
        sbi_mflow.manifold_likelihood_nn("mflow", 2)(torch.rand(10, 1), torch.randn(20, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_rejected(estimator, bad):
    x, theta = torch.randn(5, 4), torch.rand(5, 1)
    x_bad = x.clone()
    x_bad[2, 1] = bad
    theta_bad = theta.clone()
    theta_bad[0, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        estimator.log_prob(x_bad, theta)
    with pytest.raises(ValueError, match="NaN or infinite"):
        estimator.log_prob(x, theta_bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        estimator.encode(x_bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        sbi_mflow.manifold_likelihood_nn("mflow", 2)(theta, x_bad)
