"""The branch-free spline equals nflows' on the same parameters, in float64."""

import pytest
import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform
from nflows.transforms.splines import unconstrained_rational_quadratic_spline

from sbi_mflow.flows.spline import SplineCoupling, rational_quadratic_spline

TAIL_BOUND = 3.0


def _parameters(num: int, bins: int = 8, scale: float = 2.0):
    """Inputs with a third outside [-B, B] (and some exactly on the bounds), and spline
    parameters far from the identity."""
    inputs = torch.randn(num, dtype=torch.float64) * 2.5
    inputs[:4] = torch.tensor([-TAIL_BOUND, TAIL_BOUND, 0.0, 10.0], dtype=torch.float64)
    widths = torch.randn(num, bins, dtype=torch.float64) * scale
    heights = torch.randn(num, bins, dtype=torch.float64) * scale
    derivatives = torch.randn(num, bins - 1, dtype=torch.float64) * scale
    return inputs, widths, heights, derivatives


@pytest.mark.parametrize("inverse", [False, True])
def test_spline_equals_nflows_inside_and_outside_the_tail_bound(inverse):
    inputs, widths, heights, derivatives = _parameters(4000)
    outside = (inputs.abs() > TAIL_BOUND).float().mean()
    # both regimes are exercised: P(|N(0, 2.5²)| > 3) = 0.23 ± 0.007 (n = 4000): bounds ≫ 10 SE
    assert 0.1 < outside < 0.5
    expected, expected_logdet = unconstrained_rational_quadratic_spline(
        inputs, widths, heights, derivatives.clone(), inverse=inverse, tails="linear",
        tail_bound=TAIL_BOUND)
    outputs, logdet = rational_quadratic_spline(inputs, widths, heights, derivatives,
                                                inverse=inverse, tail_bound=TAIL_BOUND)
    # The same formulas in float64: agreement to 1e-6 is the bar (seen: ~1e-15).
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(logdet, expected_logdet, rtol=0, atol=1e-6)


def test_inverse_inverts_and_gradients_match_autograd_of_nflows():
    inputs, widths, heights, derivatives = _parameters(500)
    outputs, logdet = rational_quadratic_spline(inputs, widths, heights, derivatives,
                                                tail_bound=TAIL_BOUND)
    back, back_logdet = rational_quadratic_spline(outputs, widths, heights, derivatives,
                                                  inverse=True, tail_bound=TAIL_BOUND)
    # Round trip: float64 with bins as narrow as 1e-3 of the interval loses ~7 digits.
    torch.testing.assert_close(back, inputs, rtol=0, atol=1e-8)
    torch.testing.assert_close(back_logdet, -logdet, rtol=0, atol=1e-8)
    leaves = [t.clone().requires_grad_(True) for t in (widths, heights, derivatives)]
    ours = rational_quadratic_spline(inputs, *leaves, tail_bound=TAIL_BOUND)
    grads = torch.autograd.grad(sum(v.sum() for v in ours), leaves)
    leaves_ref = [t.clone().requires_grad_(True) for t in (widths, heights, derivatives)]
    reference = unconstrained_rational_quadratic_spline(
        inputs, *leaves_ref, tails="linear", tail_bound=TAIL_BOUND)
    grads_ref = torch.autograd.grad(sum(v.sum() for v in reference), leaves_ref)
    # float64 autograd of the same formulas in another order: measured ≤ 2e-11 for gradients
    # up to 195 (≤ 8e-4 of the allowance 1e-9 + 1e-9·|g|); a wrong derivative is off by O(1)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-9)


def test_coupling_layer_equals_nflows_layer_with_the_same_weights():
    torch.manual_seed(0)

    def conditioner(features_in, features_out):
        return ResidualNet(features_in, features_out, hidden_features=32, context_features=2,
                           num_blocks=2)

    mask = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    reference = PiecewiseRationalQuadraticCouplingTransform(
        mask, conditioner, num_bins=8, tails="linear", tail_bound=TAIL_BOUND).double()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    ours = SplineCoupling(mask, conditioner, num_bins=8, tail_bound=TAIL_BOUND).double()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(300, 5, dtype=torch.float64) * 2
    context = torch.randn(300, 2, dtype=torch.float64)
    for direction in ("forward", "inverse"):
        expected = getattr(reference, direction)(x, context)
        actual = getattr(ours, direction)(x, context)
        # same weights, same float64 conditioner, spline in another op order: measured ≤ 1e-13
        # for values ≤ 11 (~60 ulps); atol 1e-10 leaves 1000x
        for value, reference_value in zip(actual, expected, strict=True):
            torch.testing.assert_close(value, reference_value, rtol=0, atol=1e-10)
