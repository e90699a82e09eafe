"""The coupling stacks: every coordinate is transformed, in turn, by the couplings."""

from __future__ import annotations

import functools

import pytest
import torch
from nflows.transforms import Permutation

from sbi_mflow.flows.spline import SplineCoupling
from sbi_mflow.flows.stack import build_spline_stack, graph_coupling


def _transformed_per_coupling(layers) -> list[set[int]]:
    """Original coordinates each coupling transforms, following the permutations."""
    order = None
    transformed = []
    for layer in layers:
        if isinstance(layer, Permutation):
            permutation = layer._permutation  # nflows keeps it as a buffer, no public getter
            order = permutation.clone() if order is None else order[permutation]
        elif isinstance(layer, SplineCoupling):
            transformed.append(set(order[layer.transform_features].tolist()))
    return transformed


@pytest.mark.parametrize("features", [2, 3, 4, 7])
@pytest.mark.parametrize("num_layers", [2, 3, 5])
def test_consecutive_couplings_transform_different_coordinates(features, num_layers):
    for seed in range(10):
        torch.manual_seed(seed)
        layers = build_spline_stack(features, num_layers, context_features=1,
                                    hidden_features=8, num_blocks=1, num_bins=4,
                                    tail_bound=3.0, linear_layer="permutation")
        transformed = _transformed_per_coupling(layers)
        assert set().union(*transformed) == set(range(features)), (seed, transformed)
        for first, second in zip(transformed, transformed[1:], strict=False):
            # with 2 or 3 features the alternating masks allow no overlap at all
            if features <= 3:
                assert not first & second, (seed, transformed)


def test_two_features_learn_a_theta_dependent_second_coordinate():
    """u₂ | θ ~ N(2θ, 0.5²), u₁ ~ N(0, 1): a 3-coupling stack must learn the θ-dependence of
    u₂ (with a coordinate never transformed its density would stay N(0, 1))."""
    from sbi_mflow.flows.inner import InnerFlow

    torch.manual_seed(0)
    theta = torch.rand(4000, 1) * 2 - 1
    u = torch.cat([torch.randn(4000, 1), 2 * theta + 0.5 * torch.randn(4000, 1)], dim=1)
    true_nll = -(torch.distributions.Normal(0, 1).log_prob(u[:, 0])
                 + torch.distributions.Normal(2 * theta[:, 0], 0.5).log_prob(u[:, 1])).mean()
    for seed in range(2):
        torch.manual_seed(seed)
        flow = InnerFlow(functools.partial(
            build_spline_stack, 2, 3, context_features=1, hidden_features=16, num_blocks=1,
            num_bins=4, tail_bound=4.0, linear_layer="permutation"))
        optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
        for _ in range(300):
            batch = torch.randint(0, 4000, (200,))
            loss = -flow.log_prob(u[batch], theta[batch]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            nll = -flow.log_prob(u, theta).mean()
        # a flow blind to θ in u₂ pays the KL between N(2θ, ¼) and N(0, 1) averaged over θ:
        # ½(σ² + 4·E[θ²] − 1) − log σ = ½(0.25 + 4/3 − 1) + log 2 ≈ 0.99 nats; 0.3 leaves room
        # for 300 Adam steps of optimisation error while failing any flow that ignores u₂
        assert nll - true_nll < 0.3, (seed, float(nll), float(true_nll))


def test_graph_coupling_starts_as_the_identity_and_is_a_unit_shear():
    """(a, b) ↦ (a, b + μ(a)): the identity at initialisation; with trained (here random)
    weights its float64 autograd Jacobian is [[I, 0], [∂μ/∂a, I]], so log|det| = 0."""
    torch.manual_seed(0)
    layer = graph_coupling(5, 2, context_features=None, hidden_features=8, num_blocks=1)
    layer = layer.double()
    x = torch.randn(7, 5, dtype=torch.float64)
    y, logabsdet = layer(x)
    assert torch.equal(y, x) and torch.equal(logabsdet, torch.zeros(7, dtype=torch.float64))
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    y, logabsdet = layer(x)
    assert not torch.allclose(y[:, 2:], x[:, 2:])  # shifted by ≥ 0.04 (measured) ≫ 1e-5
    torch.testing.assert_close(y[:, :2], x[:, :2], rtol=0, atol=0)  # copied: exact
    # ∂b/∂b = I and ∂a/∂· = [I, 0] are exact in autograd (measured 0), log|det| is exactly 0,
    # and b + μ(a) − μ(a) errs by an ulp (2e-16): the float64 defaults (1e-7) are slack
    for point in x:
        jacobian = torch.autograd.functional.jacobian(lambda p: layer(p.unsqueeze(0))[0][0],
                                                      point)
        torch.testing.assert_close(jacobian[:2], torch.eye(5, dtype=torch.float64)[:2])
        torch.testing.assert_close(jacobian[2:, 2:], torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(logabsdet, torch.zeros(7, dtype=torch.float64))
    inverse, _ = layer.inverse(y)
    torch.testing.assert_close(inverse, x)
