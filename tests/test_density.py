"""The exact density is normalised on the manifold; chart vs exact log-likelihoods."""

import math

import pytest
import torch
from helpers import perturbed_estimator


def _reference_jacobian(estimator, u):
    """(B, d, n) from torch.autograd.functional.jacobian of u ↦ Σ_b g(u_b) (rows independent)."""
    jac = torch.autograd.functional.jacobian(lambda p: estimator.decode(p).sum(0), u)
    return jac.permute(1, 0, 2)


def _reference_half_log_det(estimator, u):
    jac = _reference_jacobian(estimator, u)
    return 0.5 * torch.logdet(jac.mT @ jac)


def test_exact_density_integrates_to_one_on_a_curve():
    """d=2, n=1: ∫ p(g(u)) |g'(u)| du by quadrature (Jacobian from autograd)."""
    estimator = perturbed_estimator("mflow", 2, 1, param_dim=1, seed=3)
    theta = torch.tensor([[0.4]], dtype=torch.float64)
    u = torch.linspace(-40.0, 40.0, 8001, dtype=torch.float64).unsqueeze(1)
    x = estimator.decode(u)
    log_p = estimator.log_prob(x, theta.expand(u.shape[0], 1))[0]
    g_prime = _reference_jacobian(estimator, u)[:, :, 0].norm(dim=-1)
    integral = torch.trapezoid(log_p.exp() * g_prime, u[:, 0]).detach()
    # trapezoid error at h = 0.01 measured 2.0e-5 (6e-6 at h = 0.005; tails beyond ±40 are
    # 0); float64 rounding ~1e-13. 2e-3 = 100x that; a wrong log-det term is off by O(1)
    assert abs(float(integral) - 1.0) < 2e-3


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_density_integrates_to_one_on_a_surface(seed):
    """d=3, n=2: importance sampling of ∫ p(g(u)) sqrt(det JᵀJ(u)) du with an autograd J."""
    estimator = perturbed_estimator("mflow", 3, 2, param_dim=1, seed=seed, scale=0.1)
    generator = torch.Generator().manual_seed(seed)
    num = 20000
    scale = 2.0
    u = scale * torch.randn(num, 2, generator=generator, dtype=torch.float64)
    log_q = -0.5 * (u / scale).pow(2).sum(-1) - 2 * math.log(scale) - math.log(2 * math.pi)
    theta = torch.full((num, 1), -0.3, dtype=torch.float64)
    with torch.no_grad():
        x = estimator.decode(u)
        log_p = estimator.log_prob(x, theta)[0]
    weights = torch.exp(log_p + _reference_half_log_det(estimator, u) - log_q)
    mean = weights.mean()
    stderr = weights.std() / math.sqrt(num)
    # the proposal covers the density: standard errors measured 0.011 and 0.014 (max weight
    # ≈ 10-12, so the variance is finite); 0.03 fails a proposal that misses mass
    assert float(stderr) < 0.03
    # 4 standard errors (two-sided p ≈ 6e-5); measured deviations 0.6 and 0.1 SE
    assert abs(float(mean) - 1.0) < 4 * float(stderr), (mean, stderr)


@pytest.mark.parametrize("model", ["mflow", "meflow", "pie"])
def test_chart_differs_from_exact_by_theta_independent_term(model):
    estimator = perturbed_estimator(model, 4, 2, param_dim=2)
    x = torch.randn(5, 4, dtype=torch.float64)
    differences = []
    for theta_value in torch.linspace(-1, 1, 7, dtype=torch.float64):
        theta = torch.stack([theta_value, -0.5 * theta_value]).expand(5, 2)
        differences.append(estimator.log_prob(x, theta) - estimator.chart_log_prob(x, theta))
    differences = torch.cat(differences)
    chart_values = torch.stack([
        estimator.chart_log_prob(x, torch.full((5, 2), float(t), dtype=torch.float64))[0]
        for t in (-1.0, 1.0)
    ])
    assert (chart_values[0] - chart_values[1]).abs().max() > 1e-3  # θ does matter (≈ 13-17)
    # the differences are O(1) (≤ 3; PIE's large off-manifold term is in both and cancels):
    # float64 rounding ~1e-15 (measured ≤ 4e-15); a θ-dependent one would be ≫ 1e-8
    assert differences.std(0).max() < 1e-8


def test_chart_differs_from_exact_by_theta_dependent_term_for_conditional_pie():
    estimator = perturbed_estimator("pie-conditional", 4, 2, param_dim=2)
    x = torch.randn(5, 4, dtype=torch.float64)
    differences = []
    for theta_value in torch.linspace(-1, 1, 7, dtype=torch.float64):
        theta = torch.stack([theta_value, -0.5 * theta_value]).expand(5, 2)
        differences.append(estimator.log_prob(x, theta) - estimator.chart_log_prob(x, theta))
    assert torch.cat(differences).std(0).min() > 1e-3  # measured ≥ 7e4: far from rounding
