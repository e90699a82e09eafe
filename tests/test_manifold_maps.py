"""encode / decode / project / sample: the learned manifold behaves like a manifold."""

import pytest
import torch
from helpers import perturbed_estimator


@pytest.mark.parametrize("model", ["mflow", "pie", "pie-conditional"])
def test_decode_then_encode_is_identity_and_project_is_idempotent(model):
    estimator = perturbed_estimator(model, 5, 2, param_dim=2, scale=0.2)
    theta = torch.rand(8, 2, dtype=torch.float64) if model == "pie-conditional" else None
    u = torch.randn(8, 2, dtype=torch.float64)
    on_manifold = estimator.decode(u, theta)
    # float64 round trips through the flow: measured ≤ 1e-14; 1e-7 (also the float64 default
    # used below) is far above rounding and far below any real inversion error
    torch.testing.assert_close(estimator.encode(on_manifold, theta), u, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(estimator.project(on_manifold, theta), on_manifold)
    x = 2.0 * torch.randn(8, 5, dtype=torch.float64)
    projected = estimator.project(x, theta)
    assert estimator.reconstruction_error(x, theta).min() > 1e-3  # off the manifold: ≥ 1.6
    torch.testing.assert_close(estimator.project(projected, theta), projected)


@pytest.mark.parametrize("model", ["mflow", "pie", "pie-conditional"])
def test_samples_lie_on_the_manifold_in_float32(model):
    estimator = perturbed_estimator(model, 4, 2, param_dim=2, dtype=torch.float32, scale=0.1)
    theta = torch.rand(3, 2)
    samples = estimator.sample((50,), theta)
    assert samples.shape == (50, 3, 4)
    flat_theta = theta.unsqueeze(0).expand(50, 3, 2).reshape(-1, 2)
    error = estimator.reconstruction_error(samples.reshape(-1, 4), flat_theta)
    # float32 round trip of |x| ≤ 5: eps·|x| ≈ 6e-7 per operation, measured ≤ 5.5e-6 (all
    # kernels); 1e-4 leaves 18x and still fails a sample off the manifold
    assert error.max() < 1e-4


def test_meflow_projection_uses_its_encoder():
    """Me-flow's e is a separate network: before training e(g(u)) differs from u."""
    estimator = perturbed_estimator("meflow", 4, 2, scale=0.1)
    u = torch.randn(6, 2, dtype=torch.float64)
    assert (estimator.encode(estimator.decode(u)) - u).abs().max() > 1e-3  # measured 1.7


def test_samples_follow_the_inner_flow_density():
    """Encoded samples are distributed as the inner flow: their mean chart NLL ≈ entropy."""
    estimator = perturbed_estimator("mflow", 3, 2, param_dim=1, dtype=torch.float32, scale=0.1)
    theta = torch.full((1, 1), 0.5)
    samples = estimator.sample((4000,), theta)[:, 0]
    u = estimator.encode(samples)
    z, _ = estimator.inner(u, context=estimator.context(theta.expand(4000, 1)))
    # N(0, 1) with n = 4000: SE of the mean 1/√n = 0.016 and of the sd 1/√(2n) = 0.011, so 0.1
    # is 6 and 9 SE (measured |mean| ≤ 0.009, |sd − 1| ≤ 0.011)
    assert z.mean(0).abs().max() < 0.1
    assert (z.std(0) - 1.0).abs().max() < 0.1
