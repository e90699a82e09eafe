"""log det(J_gᵀ J_g) against an independent float64 Jacobian from torch.autograd.functional."""

import pytest
import torch
from helpers import perturbed_estimator
from nflows.transforms import AdditiveCouplingTransform

from sbi_mflow.flows.spline import SplineCoupling
from sbi_mflow.jacobian import batched_jacobian, log_det_gram


def _reference_log_det(estimator, u, theta=None):
    values = []
    for i in range(u.shape[0]):
        cond = None if theta is None else theta[i : i + 1]

        def decode_one(point, cond=cond):
            return estimator.decode(point.unsqueeze(0), cond)[0]

        jac = torch.autograd.functional.jacobian(decode_one, u[i])
        values.append(torch.logdet(jac.T @ jac))
    return torch.stack(values)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("linear_layer", ["permutation", "lu"])
@pytest.mark.parametrize(
    "model,data_dim,manifold_dim",
    [
        ("mflow", 3, 2),
        ("mflow", 6, 3),
        ("meflow", 5, 2),
        ("pie-conditional", 4, 2),
        ("mflow", 2, 1),
    ],
)
def test_log_det_metric_matches_autograd(model, data_dim, manifold_dim, linear_layer, seed):
    estimator = perturbed_estimator(
        model, data_dim, manifold_dim, param_dim=2, seed=seed, linear_layer=linear_layer
    )
    u = 1.5 * torch.randn(6, manifold_dim, dtype=torch.float64)
    theta = torch.rand(6, 2, dtype=torch.float64) if model == "pie-conditional" else None
    reference = _reference_log_det(estimator, u, theta)
    # two float64 routes to log det(JᵀJ): rounding ~1e-16 amplified by cond(JᵀJ) (LU layers
    # are the worst) gave ≤ 2e-11 absolute over all cases and kernels; |reference| ≥ 1.6e-3,
    # so the allowance is ≥ 1e-9 + 1.6e-9, i.e. ≥ 100x. A wrong Jacobian term is off by ≫ 1e-6.
    for mode in ("forward", "reverse"):
        ours = estimator.log_det_metric(u, theta, mode=mode)
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-9)


def test_batched_jacobian_of_linear_map_is_the_matrix():
    matrix = torch.randn(5, 3, dtype=torch.float64)
    u = torch.randn(4, 3, dtype=torch.float64)
    # float64 defaults (rtol 1e-7, atol 1e-7): the Jacobian of x ↦ x Mᵀ is M up to a few
    # ulps, and log det of a well-conditioned 3×3 Gram matrix agrees to ~1e-15
    for mode in ("forward", "reverse"):
        jac = batched_jacobian(lambda x, c: x @ matrix.T, u, data_dim=5, mode=mode)
        torch.testing.assert_close(jac, matrix.expand(4, 5, 3))
    torch.testing.assert_close(log_det_gram(jac), torch.logdet(matrix.T @ matrix).expand(4))


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("layer", ["spline", "graph"])
def test_log_det_metric_gradient_matches_finite_differences(mode, layer):
    # d = 4: with d = 3, n = 2 the test estimator's cyclic permutations send the first
    # latent coordinate straight onto the normal one, and the graph layer's shear then
    # leaves det JᵀJ unchanged (it adds multiples of one column to the other)
    estimator = perturbed_estimator("mflow", 4, 2, scale=0.1)
    u = torch.randn(4, 2, dtype=torch.float64)
    kind = SplineCoupling if layer == "spline" else AdditiveCouplingTransform
    module = next(m for m in estimator.chart.body.modules() if isinstance(m, kind))
    parameter = next(p for p in module.parameters() if p.dim() == 2)
    estimator.log_det_metric(u, mode=mode).sum().backward()
    analytic = parameter.grad[0, 0].item()
    step = 1e-6
    with torch.no_grad():
        parameter[0, 0] += step
        plus = estimator.log_det_metric(u, mode=mode).sum().item()
        parameter[0, 0] -= 2 * step
        minus = estimator.log_det_metric(u, mode=mode).sum().item()
        parameter[0, 0] += step
        assert not estimator.log_det_metric(u, mode=mode).requires_grad
    assert abs(analytic) > 1e-6  # measured 0.16 (spline) and 0.046 (graph)
    # central difference, float64: rounding eps·|f|/h ≈ 2e-16·3/1e-6 ≈ 7e-10, truncation
    # O(h²) ≈ 1e-12; measured ≤ 2e-9. 1e-5 is ≥ 5000x that and ≥ 2e-4 of |analytic|.
    assert abs(analytic - (plus - minus) / (2 * step)) < 1e-5 * max(1.0, abs(analytic))
