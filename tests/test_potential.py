"""Potentials: chart vs exact likelihood, input checks, off-manifold and convergence warnings.

Fast: untrained estimators with perturbed weights (tests/helpers.py), no training.
"""

import warnings

import pytest
import torch
from helpers import perturbed_estimator
from sbi.inference.potentials.likelihood_based_potential import (
    likelihood_estimator_based_potential,
)
from sbi.utils import BoxUniform

from sbi_mflow.sampling.manifold_check import (
    OffManifoldWarning,
    check_on_manifold,
    manifold_threshold,
    rounding_floor,
)
from sbi_mflow.sampling.potential import (
    ChartPotential,
    ExactLikelihoodPotential,
    manifold_potential,
)

FIXED = ["mflow", "meflow", "pie"]


def _prior(p=2):
    return BoxUniform(-torch.ones(p), torch.ones(p))


def _grid(p=2, k=7):
    axis = torch.linspace(-0.95, 0.95, k, dtype=torch.float64)
    return torch.cartesian_prod(*([axis] * p)).reshape(-1, p)


@pytest.mark.parametrize("model", FIXED)
def test_chart_and_exact_potentials_differ_by_a_theta_independent_constant(model):
    estimator = perturbed_estimator(model, data_dim=4, manifold_dim=2, param_dim=2)
    x_o = torch.randn(6, 4, dtype=torch.float64) * 1.5 + 1.0
    chart = manifold_potential(estimator, _prior(), x_o)
    exact = manifold_potential(estimator, _prior(), x_o, exact=True)
    assert isinstance(chart, ChartPotential) and isinstance(exact, ExactLikelihoodPotential)
    theta = _grid()
    difference = (chart(theta, track_gradients=False) - exact(theta, track_gradients=False))
    # the θ-dependent parts vary by O(10) over the grid, the difference not at all
    assert chart(theta, track_gradients=False).std() > 1.0
    torch.testing.assert_close(difference, difference[0].expand_as(difference),
                               atol=1e-8, rtol=0)
    # the constant is the θ-independent term of the model, computed independently here
    with torch.no_grad():
        u = estimator.encode(x_o)
        if model == "pie":
            expected = (exact.estimator.log_prob(x_o, theta[:1].expand(6, 2))
                        - exact.estimator.chart_log_prob(x_o, theta[:1].expand(6, 2))).sum()
        else:
            expected = (-0.5 * estimator.log_det_metric(u)).sum()
    torch.testing.assert_close(-difference[0], expected, atol=1e-6, rtol=1e-8)


def test_exact_potential_equals_sbi_likelihood_potential():
    estimator = perturbed_estimator("mflow", data_dim=4, manifold_dim=2, param_dim=2)
    x_o = torch.randn(5, 4, dtype=torch.float64) + 1.0
    # sbi stores x_o in float32: use values that float32 represents exactly, so that both
    # potentials see the same x_o (rounding it would move the result by ~1e-7 relative).
    x_o = x_o.float().double()
    ours = manifold_potential(estimator, _prior(), x_o, exact=True)
    sbi_potential, _ = likelihood_estimator_based_potential(estimator, _prior(), x_o)
    theta = _grid(k=4)
    torch.testing.assert_close(ours(theta, track_gradients=False),
                               sbi_potential(theta, track_gradients=False).double())


def test_chart_potential_is_vectorised_over_thetas_and_differentiable():
    estimator = perturbed_estimator("mflow", data_dim=4, manifold_dim=2, param_dim=2)
    x_o = torch.randn(5, 4, dtype=torch.float64) + 1.0
    potential = manifold_potential(estimator, _prior(), x_o)
    theta = _grid(k=3)
    batched = potential(theta, track_gradients=False)
    single = torch.cat([potential(t, track_gradients=False) for t in theta])
    torch.testing.assert_close(batched, single)
    # equals the sum over trials of the estimator's chart log-likelihood + log prior
    manual = torch.stack([
        estimator.chart_log_prob(x_o, t.expand(5, 2)).sum() for t in theta
    ]) + _prior().log_prob(theta)
    torch.testing.assert_close(batched, manual.double())
    # gradient w.r.t. θ matches central finite differences; parameters get no gradient
    theta0 = torch.tensor([[0.1, -0.3]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(potential(theta0).sum(), theta0)
    step = 1e-5
    for i in range(2):
        shift = torch.zeros(1, 2, dtype=torch.float64)
        shift[0, i] = step
        fd = (potential(theta0.detach() + shift, False) - potential(theta0.detach() - shift, False))
        torch.testing.assert_close(grad[0, i], fd[0] / (2 * step), atol=1e-5, rtol=1e-4)
    assert all(not p.requires_grad for p in potential.estimator.parameters())
    assert all(p.requires_grad for p in estimator.parameters())  # caller's copy untouched


def test_potential_under_no_grad_and_outside_support():
    estimator = perturbed_estimator("mflow", data_dim=4, manifold_dim=2, param_dim=2)
    potential = manifold_potential(estimator, _prior(), torch.randn(3, 4, dtype=torch.float64))
    with torch.no_grad():
        value = potential(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    assert torch.isfinite(value[0]) and value[1] == -float("inf")


def test_pie_conditional_uses_exact_potential_with_a_cost_warning():
    estimator = perturbed_estimator("pie-conditional", data_dim=4, manifold_dim=2, param_dim=2)
    x_o = torch.randn(3, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="conditions the manifold on θ"):
        potential = manifold_potential(estimator, _prior(), x_o)
    assert isinstance(potential, ExactLikelihoodPotential)
    with pytest.raises(ValueError, match="manifold does not depend on θ"):
        manifold_potential(estimator, _prior(), x_o, exact=False)


def test_bad_observations_and_thetas_raise_clear_errors():
    estimator = perturbed_estimator("mflow", data_dim=4, manifold_dim=2, param_dim=2)
    potential = manifold_potential(estimator, _prior())
    with pytest.raises(ValueError, match="No observed data"):
        potential(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"x_o must have shape \(num_trials, 4\)"):
        potential.set_x(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="x_o must have shape"):
        potential.set_x(torch.zeros(2, 3, 4))
    bad = torch.zeros(3, 4)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        potential.set_x(bad)
    with pytest.raises(ValueError, match="one row per observation"):
        potential.set_x(torch.zeros(3, 4), x_is_iid=False)
        potential(torch.zeros(2, 2))
    potential.set_x(torch.zeros(4))  # one trial as a vector is fine
    assert potential.num_trials == 1
    with pytest.raises(ValueError, match="θ must have shape"):
        potential(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="NaN"):
        potential(torch.tensor([[0.0, float("nan")]]))


def _unit_normals(estimator, points):
    """Unit vectors normal to the learned manifold at ``points`` (float64 autograd J_g)."""
    normals = []
    generator = torch.Generator().manual_seed(1)
    for point in points.double():
        u = estimator.encode(point[None])[0]
        jacobian = torch.autograd.functional.jacobian(lambda v: estimator.decode(v[None])[0], u)
        basis, _ = torch.linalg.qr(jacobian)  # (d, n) orthonormal tangent basis
        direction = torch.randn(point.shape[0], dtype=torch.float64, generator=generator)
        direction = direction - basis @ (basis.T @ direction)
        normals.append(direction / direction.norm())
    return torch.stack(normals)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_off_manifold_check_on_exact_manifold_data(dtype):
    """Points projected onto the learned manifold lie on it up to rounding: no warning, in
    either dtype, whatever the reference; a displacement normal to the manifold warns."""
    # scale=0.1: a chart conditioned like trained ones (round trips of its exact-manifold
    # points measured ≤ 29 ε·S over 20 seeds, S the data scale; the floor is 2048 ε·S).
    estimator = perturbed_estimator("mflow", data_dim=4, manifold_dim=2, param_dim=2,
                                    scale=0.1)
    torch.manual_seed(0)
    with torch.no_grad():
        x = torch.randn(60, 4, dtype=torch.float64) * torch.linspace(0.5, 2.0, 4) + 1.0
        on = estimator.project(x)
    normals = _unit_normals(estimator, on[50:])
    estimator = estimator.to(dtype)
    on = on.to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OffManifoldWarning)
        errors = check_on_manifold(estimator, on[50:], reference_x=on[:50])
        check_on_manifold(estimator, on[50:], reference_errors=errors[:5])
        check_on_manifold(estimator, on[50:])  # relative threshold
    # Rounding noise of the reference sits below the floor, so the floor sets the threshold.
    threshold, origin = manifold_threshold(estimator, reference_x=on[:50])
    assert origin.startswith("rounding floor") and threshold == rounding_floor(estimator)
    spread = float(estimator.chart.standardize.std.double().norm())
    # A normal displacement δ moves x off the manifold by δ − O(δ² · curvature): with
    # δ = 1e-3 · spread (2.7e-3 here) that is ≥ 2× the floor in float32 (2.4e-4 · S,
    # S = 4.6) and ~10^9× it in float64, far beyond the rounding of the error itself.
    for step in (10.0, 1e-3 * spread):
        far = on[50:].clone()
        far[3] = far[3] + (step * normals[3]).to(dtype)
        with pytest.warns(OffManifoldWarning, match="1 of 10 observations"):
            errors = check_on_manifold(estimator, far, reference_x=on[:50])
        assert errors[3] > 0.5 * step
        with pytest.warns(OffManifoldWarning, match="1 of 10 observations"):
            check_on_manifold(estimator, far, reference_errors=torch.full((20,), 1e-4 * step))


def test_off_manifold_warning_uses_reference_errors_or_relative_threshold():
    estimator = perturbed_estimator("mflow", data_dim=4, manifold_dim=2, param_dim=2)
    with torch.no_grad():
        on = estimator.project(torch.randn(50, 4, dtype=torch.float64))
    normal = _unit_normals(estimator, on[43:44])[0]
    far = on[40:].clone()
    far[3] = far[3] + 10.0 * normal
    # reference errors of 0.01 set the threshold at 0.03; the relative one is 0.05 · ‖σ_x‖₂
    with pytest.warns(OffManifoldWarning, match=r"1 of 10 observations.*reference errors"):
        errors = check_on_manifold(estimator, far, reference_errors=torch.full((20,), 0.01))
    assert errors[3] > 1.0 and errors[torch.arange(10) != 3].max() < 0.03
    with pytest.warns(OffManifoldWarning, match="data spread"):
        check_on_manifold(estimator, far)


def test_prior_and_likelihood_each_in_their_own_dtype():
    """A float64 MultivariateNormal prior with a float32 estimator (sbi's Gaussian examples):
    the potential is log π(θ) in float64 plus the float32 chart log-likelihood."""
    from torch.distributions import MultivariateNormal

    estimator = perturbed_estimator("mflow", data_dim=4, manifold_dim=2, param_dim=2,
                                    dtype=torch.float32)
    prior = MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                               torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64)))
    x_o = torch.randn(3, 4) + 1.0
    potential = manifold_potential(estimator, prior, x_o)
    assert potential.prior_dtype == torch.float64 and potential.dtype == torch.float32
    theta = _grid(k=3)
    values = potential(theta, track_gradients=False)
    assert values.dtype == torch.float64
    with torch.no_grad():
        expected = prior.log_prob(theta) + torch.stack([
            estimator.chart_log_prob(x_o, t.float().expand(3, 2)).sum() for t in theta
        ]).double()
    # The likelihood is float32: one batched call and nine single calls take different kernel
    # paths (vector width, blocking), so each of the encoding's and inner flow's hundreds of
    # float32 operations rounds differently. Measured up to 62 ulps apart (5e-6 relative at
    # |value| ≈ 24) on torch's portable kernels; rtol 3e-5 is 6× that, and a wrong prior or
    # likelihood term would be off by O(1).
    torch.testing.assert_close(values, expected, rtol=3e-5, atol=1e-5)


def test_potential_on_the_cpu_keeps_prior_and_estimator():
    """device="cpu" for a CPU estimator is a no-op: same prior object, nothing moved."""
    estimator = perturbed_estimator("mflow", data_dim=4, manifold_dim=2, param_dim=2)
    prior = _prior()
    potential = manifold_potential(estimator, prior, device="cpu")
    assert potential.prior is prior and torch.device(potential.device) == torch.device("cpu")
    assert potential.to("cpu") is potential and potential.prior is prior
    with pytest.raises(ValueError, match="needs freeze=True"):
        manifold_potential(estimator, prior, freeze=False, device="meta")


@pytest.mark.parametrize("model", ["mflow", "pie-conditional"])
def test_batched_observations_equal_one_at_a_time(model):
    """B observations with T trials each, C θ per observation: ``batched`` equals setting each
    observation alone and evaluating its θ's; sbi's ``x_is_iid=False`` (one θ row per x row)
    equals the same per row."""
    estimator = perturbed_estimator(model, data_dim=4, manifold_dim=2, param_dim=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pie-conditional's cost warning
        potential = manifold_potential(estimator, _prior())
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 4, generator=generator, dtype=torch.float64)  # B = 3, T = 2
    theta = torch.rand(3, 5, 2, generator=generator, dtype=torch.float64) - 0.5  # C = 5
    potential.set_x_batch(potential.check_x(x, batched=True))
    together = potential.batched(theta, track_gradients=False)
    alone = []
    for b in range(3):
        potential.set_x(x[b])
        alone.append(potential(theta[b], track_gradients=False))
    # the same float64 arithmetic on differently sized batches: equal up to reduction order
    torch.testing.assert_close(together, torch.stack(alone))
    potential.set_x(x[:, 0], x_is_iid=False)
    rows = potential(theta[:, 0], track_gradients=False)
    single = []
    for b in range(3):
        potential.set_x(x[b, :1])
        single.append(potential(theta[b, :1], track_gradients=False)[0])
    torch.testing.assert_close(rows, torch.stack(single))
