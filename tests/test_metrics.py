"""sbi_mflow.metrics: every metric on a case whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sbi.utils.metrics import unbiased_mmd_squared as sbi_unbiased_mmd_squared
from torch.distributions import MultivariateNormal

from sbi_mflow.metrics import (
    OODAUC,
    c2st,
    clipped_mean,
    closure,
    log_posterior_at_true_theta,
    mean_distance_to_manifold,
    mean_reconstruction_error,
    median_pairwise_distance,
    mmd_squared,
    ood_auc,
    ood_auc_from_scores,
)


def _gaussian(n: int, mean, sigma: float = 1.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mean = torch.as_tensor(mean, dtype=torch.float64)
    return mean + sigma * torch.randn(n, mean.numel(), generator=generator, dtype=torch.float64)


def _population_mmd2(dim: int, s: float, sigma: float, sq_shift: float) -> float:
    """MMD² between N(μ1, σ²I) and N(μ2, σ²I) for k = exp(−‖a−b‖²/(2s²)), ‖μ1−μ2‖² = sq_shift."""
    same = (s**2 / (s**2 + 2 * sigma**2)) ** (dim / 2)
    cross = same * math.exp(-sq_shift / (2 * (s**2 + 2 * sigma**2)))
    return 2 * same - 2 * cross


# ------------------------------------------------------------------------------------- MMD
def test_median_pairwise_distance_known_values():
    # distances of 0, 1, 2, 3 on a line: 1, 2, 3, 1, 2, 1 -> median 1.5 (numpy's convention);
    # integer distances are exact in float64, so approx's default rel 1e-6 is slack
    assert median_pairwise_distance(torch.tensor([0.0, 1.0, 2.0, 3.0])) == pytest.approx(1.5)
    points = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])  # distances 5, 8, 5
    assert median_pairwise_distance(points, chunk_size=1) == pytest.approx(5.0)


def test_mmd_matches_sbi_and_bruteforce_and_is_chunk_invariant():
    x, y = _gaussian(60, [0.0, 0.0, 0.0], seed=1), _gaussian(45, [0.3, 0.0, -0.2], seed=2)
    value = mmd_squared(x, y, bandwidth=1.3)
    # float64 sums of ~6000 kernel values ≈ 0.5 with cancellation to MMD² ≈ 0.03: relative
    # error ~1e-14 (measured ≤ 7e-15 for sbi, brute force and chunks); rel 1e-10 and 1e-8
    # leave ≥ 1e4x. The float32 copy of y moves it by ~eps32 (measured 2.4e-8; rel 1e-6).
    assert value == pytest.approx(float(sbi_unbiased_mmd_squared(x, y, scale=1.3)), rel=1e-10)
    kern = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * 1.3**2))  # noqa: E731
    kxx, kyy, kxy = kern(x, x), kern(y, y), kern(x, y)
    brute = (
        (kxx.sum() - kxx.trace()) / (60 * 59)
        + (kyy.sum() - kyy.trace()) / (45 * 44)
        - 2 * kxy.mean()
    )
    assert value == pytest.approx(float(brute), rel=1e-8)
    assert mmd_squared(x, y, bandwidth=1.3, chunk_size=7) == pytest.approx(value, rel=1e-10)
    assert mmd_squared(x.numpy(), y.float(), bandwidth=1.3) == pytest.approx(value, rel=1e-6)


def test_mmd_default_bandwidth_is_median_of_reference_samples():
    x, y = _gaussian(80, [0.0, 0.0], sigma=3.0, seed=3), _gaussian(70, [0.0, 0.0], seed=4)
    s_ref = median_pairwise_distance(y)
    # the same bandwidth float and the same arithmetic: equal up to ~1e-16; rel 1e-12 is slack
    assert mmd_squared(x, y) == pytest.approx(mmd_squared(x, y, bandwidth=s_ref), rel=1e-12)
    # The reference set decides the width, so swapping the arguments changes the value.
    s_swapped = median_pairwise_distance(x)
    assert mmd_squared(y, x) == pytest.approx(mmd_squared(y, x, bandwidth=s_swapped), rel=1e-12)
    assert abs(mmd_squared(x, y) - mmd_squared(y, x)) > 1e-3  # measured 0.21 vs 0.075


def test_mmd_same_distribution_is_about_zero_and_can_be_negative():
    mean = [1.0, -1.0]
    values = [
        mmd_squared(_gaussian(200, mean, seed=2 * i), _gaussian(200, mean, seed=2 * i + 1))
        for i in range(10)
    ]
    # null sd at n = 200 (300 seeds): 0.0032, so 0.02 is 6 sd (seeded max here 0.0078)
    assert max(abs(v) for v in values) < 0.02
    # unbiased: scatters around 0 on both sides (here min −0.0022, max 0.0078: ≫ rounding)
    assert min(values) < 0.0 < max(values)
    big = mmd_squared(_gaussian(2000, [0.0, 0.0], seed=21), _gaussian(2000, [0.0, 0.0], seed=22))
    assert abs(big) < 3e-3  # null sd at n = 2000: 0.0003 (30 seeds), so 10 sd; here −0.0003


@pytest.mark.parametrize(
    "dim, sigma, s, shift, n, tol",
    [(2, 1.0, 1.5, [1.0, 0.0], 2000, 0.025), (3, 0.5, 1.0, [0.5, 0.5, 0.0], 1500, 0.03)],
)
def test_mmd_matches_closed_form_for_two_gaussians(dim, sigma, s, shift, n, tol):
    x = _gaussian(n, [0.0] * dim, sigma=sigma, seed=5)
    y = _gaussian(n, shift, sigma=sigma, seed=6)
    expected = _population_mmd2(dim, s, sigma, sum(v * v for v in shift))
    assert expected > 3 * tol
    # tol ≈ 3-4 Monte Carlo standard deviations (measured over 30 seeds: 0.008 for the 2-D
    # case, 0.007 for the 3-D one; the seeded errors here are 0.005 and 0.001)
    assert mmd_squared(x, y, bandwidth=s) == pytest.approx(expected, abs=tol)


def test_mmd_errors():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="dimension"):
        mmd_squared(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="NaN"):
        mmd_squared(x, torch.tensor([[0.0, float("nan")], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        mmd_squared(x, torch.randn(1, 2))
    with pytest.raises(ValueError, match="shape"):
        mmd_squared(torch.randn(4, 2, 2), x)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_squared(x, x, bandwidth=0.0)
    with pytest.raises(ValueError, match="median pairwise distance"):
        mmd_squared(x, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="chunk_size"):
        mmd_squared(x, x, chunk_size=0)


# --------------------------------------------------------------- distance / reconstruction
class _KnownDistance:
    """Manifold = the x₀ axis; distance = ‖x_{1:}‖."""

    def distance_to_manifold(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:].norm(dim=-1)


class _ProjectToAxis:
    """A fake estimator whose learned manifold is the x₀ axis."""

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:].norm(dim=-1)


# Below, the expected values are small sums of exactly representable numbers (or norms that
# are exact, like ‖(3, 4)‖ = 5): errors of a few ulps, far inside approx's default rel 1e-6.
def test_clipped_mean_clips_at_ten():
    assert clipped_mean([1.0, 20.0, 3.0]) == pytest.approx(14.0 / 3.0)
    assert clipped_mean(torch.tensor([1.0, float("inf")])) == pytest.approx(5.5)
    assert clipped_mean([1.0, 4.0], clip=2.0) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="NaN"):
        clipped_mean([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-negative"):
        clipped_mean([-1.0])


def test_mean_distance_to_manifold_clips():
    x = torch.tensor([[5.0, 0.5, 0.0], [0.0, 3.0, 4.0], [1.0, 0.0, 30.0]])  # 0.5, 5, 30 -> 10
    assert mean_distance_to_manifold(x, _KnownDistance()) == pytest.approx(15.5 / 3)
    fn = _KnownDistance().distance_to_manifold
    assert mean_distance_to_manifold(x.numpy(), fn) == pytest.approx(15.5 / 3)
    with pytest.raises(ValueError, match="distance_to_manifold"):
        mean_distance_to_manifold(x, object())


def test_mean_distance_to_manifold_with_sphere_simulator():
    from simulators import ConditionalSphere

    sim = ConditionalSphere(manifold_dim=1, data_dim=3)  # unit circle in the (x₀, x₁) plane
    phi = torch.tensor([0.3, 1.0, 2.0, 4.0], dtype=torch.float64)
    radius = torch.tensor([1.0, 1.5, 13.0, 1.0], dtype=torch.float64)
    height = torch.tensor([0.0, 0.0, 0.0, 2.0], dtype=torch.float64)
    x = torch.stack([radius * phi.cos(), radius * phi.sin(), height], dim=1)
    # distances 0, 0.5, 12 -> 10, 2
    assert mean_distance_to_manifold(x, sim) == pytest.approx(12.5 / 4)
    on = sim(sim.prior.sample((50,)))
    # float32 points on the unit circle: distance ~ eps32 (measured 1.4e-8); 1e-5 ≫ rounding
    assert mean_distance_to_manifold(on, sim) < 1e-5


def test_mean_reconstruction_error_clips_and_batches():
    x = torch.tensor([[1.0, 0.5], [2.0, -2.0], [0.0, 15.0], [0.0, 1.0]])  # 0.5, 2, 15->10, 1
    for batch_size in (1, 3, 1000):
        value = mean_reconstruction_error(x, _ProjectToAxis(), batch_size=batch_size)
        assert value == pytest.approx(13.5 / 4)
    with pytest.raises(ValueError, match="reconstruction_error"):
        mean_reconstruction_error(x, object())


def test_mean_reconstruction_error_with_manifold_flow_estimator():
    from helpers import perturbed_estimator

    est = perturbed_estimator("mflow", data_dim=3, manifold_dim=2, param_dim=1)
    x = torch.randn(30, 3, dtype=torch.float64)
    with torch.no_grad():
        direct = est.reconstruction_error(x).clamp(max=10).mean().item()
    assert direct > 1e-3  # measured 8.5
    # x.float() rounds the inputs by ~6e-8 relative; measured change 2e-9 (approx rel 1e-6)
    assert mean_reconstruction_error(x.float(), est, batch_size=7) == pytest.approx(direct)


# -------------------------------------------------------------------------------------- OOD
def test_ood_auc_identical_separated_and_symmetrised():
    a, b = _gaussian(4000, [0.0], seed=7)[:, 0], _gaussian(4000, [0.0], seed=8)[:, 0]
    same = ood_auc_from_scores(a, b)
    # null AUC of 4000 vs 4000: SE √((n+m+1)/(12nm)) = 0.0065, so 0.02 is 3 SE (here 0.505)
    assert same.likelihood == pytest.approx(0.5, abs=0.02) and same.reconstruction is None
    far = _gaussian(4000, [6.0], seed=9)[:, 0]
    sep = ood_auc_from_scores(a, far, reco_in=a.abs(), reco_ood=b.abs())
    # 6 sd apart: AUC Φ(6/√2) = 0.99999 (here 0.99999); reconstruction as above (here 0.504)
    assert sep.likelihood > 0.99 and sep.reconstruction == pytest.approx(0.5, abs=0.02)
    assert sep.auc == sep.likelihood
    # symmetrisation: the direction of a score does not matter (ranks only: exact)
    assert ood_auc_from_scores(-a, -far).likelihood == pytest.approx(sep.likelihood)
    perfect = ood_auc_from_scores([1.0, 2.0], [-1.0, -2.0])  # raw AUC 0 -> 1
    assert perfect.auc == 1.0
    assert ood_auc_from_scores(None, None, [0.0, 0.1], [5.0, 7.0]) == OODAUC(None, 1.0, 1.0)


def test_ood_auc_infinite_scores_and_errors():
    result = ood_auc_from_scores([-1.0, -2.0, -3.0], [-float("inf"), -float("inf"), -50.0])
    assert result.auc == 1.0
    with pytest.raises(ValueError, match="NaN"):
        ood_auc_from_scores([0.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="both"):
        ood_auc_from_scores([0.0], None)
    with pytest.raises(ValueError, match="at least one"):
        ood_auc_from_scores(None, None)


class _FakeLikelihoodModel:
    """log p(x|θ) = log N(x; θ·1, I); manifold = x₀ axis. Checks sbi's shape convention."""

    def __init__(self) -> None:
        self.calls = []

    def log_prob(self, input: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        assert input.dim() == 3 and input.shape[1] == 1 and condition.shape == (1, 1)
        self.calls.append(input.shape[0])
        dist = MultivariateNormal(condition.expand(1, 2), torch.eye(2, dtype=input.dtype))
        return dist.log_prob(input)

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:].norm(dim=-1)


def test_ood_auc_from_estimator():
    model = _FakeLikelihoodModel()
    x_in = _gaussian(500, [0.0, 0.0], seed=10)
    x_ood_far = _gaussian(500, [0.0, 8.0], seed=11)  # far off the model's manifold too
    result = ood_auc(model, x_in, x_ood_far, theta=torch.zeros(1), batch_size=64)
    assert model.calls[:2] == [64, 64] and sum(model.calls) == 1000
    # 8 sd apart in x₁ (likelihood and distance to the x₀ axis): AUCs ≈ 1 (measured 1.0)
    assert result.likelihood > 0.99 and result.reconstruction > 0.99 and result.auc > 0.99
    same = ood_auc(model, x_in, _gaussian(500, [0.0, 0.0], seed=12), theta=[[0.0]])
    # null AUC of 500 vs 500: SE 0.018; auc is the larger of two, so 0.06 is 3.3 SE (here 0.526)
    assert same.auc == pytest.approx(0.5, abs=0.06)
    no_reco = ood_auc(model, x_in, x_ood_far, theta=0.0, use_reconstruction=False)
    assert no_reco.reconstruction is None and no_reco.auc == no_reco.likelihood
    with pytest.raises(ValueError, match="one parameter point"):
        ood_auc(model, x_in, x_ood_far, theta=torch.zeros(2, 1))


def test_ood_auc_with_manifold_flow_estimator_runs():
    from helpers import perturbed_estimator

    est = perturbed_estimator("mflow", data_dim=3, manifold_dim=2, param_dim=1)
    x_in = torch.randn(40, 3, dtype=torch.float64)
    result = ood_auc(est, x_in, x_in + torch.tensor([0.0, 0.0, 20.0], dtype=torch.float64),
                     theta=torch.zeros(1), batch_size=16)
    for value in result:
        assert 0.5 <= value <= 1.0  # a range check: max(AUC, 1 − AUC) is in [0.5, 1] exactly


# ------------------------------------------------------------------------------------- C2ST
def test_c2st_same_and_separated():
    x = _gaussian(400, [0.0, 0.0], seed=13)
    same = c2st(x, _gaussian(400, [0.0, 0.0], seed=14), classifier_kwargs={"n_estimators": 50})
    # null C2ST of 400 vs 400 over 30 seeds: 0.503 ± 0.022, so 0.1 is 4.5 sd (here 0.51)
    assert same == pytest.approx(0.5, abs=0.1)
    far = c2st(x, _gaussian(400, [6.0, 0.0], seed=15), classifier_kwargs={"n_estimators": 50})
    assert far > 0.97  # Bayes accuracy Φ(3) = 0.9987; measured ≥ 0.996 over 10 seeds
    again = c2st(x.numpy(), _gaussian(400, [6.0, 0.0], seed=15),
                 classifier_kwargs={"n_estimators": 50})
    assert again == far  # seeded: the same float64 inputs and classifier seed, bit for bit
    with pytest.raises(ValueError, match="dimension"):
        c2st(x, torch.randn(10, 3))


# ---------------------------------------------------------------- log posterior at true θ
def test_kde_log_density_at_mean_of_gaussian():
    mean = torch.tensor([1.0, -1.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=torch.float64)
    samples = MultivariateNormal(mean, cov).sample((50000,))
    analytic = float(MultivariateNormal(mean, cov).log_prob(mean))
    value = log_posterior_at_true_theta(mean, samples)
    # Scott's rule: kernel cov f²·Cov, f = N^(-1/(p+4)); smoothing bias −log(1 + f²) ≈ −0.027,
    # Monte Carlo standard deviation ≈ 0.02 at N = 50000.
    # 0.1 = bias + 3.7 sd (here the error is 0.005)
    assert value == pytest.approx(analytic, abs=0.1)
    # the same float64 samples through numpy: the same arithmetic (approx default rel 1e-6)
    assert log_posterior_at_true_theta(mean[None], samples.numpy()) == pytest.approx(value)
    one_d = log_posterior_at_true_theta(0.0, torch.randn(20000, dtype=torch.float64))
    # 1-D, N = 20000: f = N^(-1/5) = 0.14, bias −½ log(1 + f²) ≈ −0.01; relative sd of the KDE
    # √(R(K)/(N h p)) ≈ 0.016, so 0.08 = bias + 4.4 sd (here the error is −0.001)
    assert one_d == pytest.approx(-0.5 * math.log(2 * math.pi), abs=0.08)


class _NormalPosterior:
    def __init__(self) -> None:
        self.dist = MultivariateNormal(torch.zeros(2), torch.eye(2))

    def log_prob(self, theta: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        assert theta.shape == (1, 2)
        return self.dist.log_prob(theta)


def test_log_posterior_from_posterior_object_and_errors():
    post = _NormalPosterior()
    expected = -math.log(2 * math.pi) - 0.5
    # float32 log_prob: ~3 roundings of values ≈ 2.3 (≤ 2e-7 relative); approx rel 1e-6
    assert log_posterior_at_true_theta([1.0, 0.0], posterior=post) == pytest.approx(expected)
    assert log_posterior_at_true_theta([1.0, 0.0], posterior=post, x=torch.zeros(1, 3)) == (
        pytest.approx(expected)
    )
    samples = torch.randn(100, 2)
    with pytest.raises(ValueError, match="exactly one"):
        log_posterior_at_true_theta([0.0, 0.0], samples, posterior=post)
    with pytest.raises(ValueError, match="exactly one"):
        log_posterior_at_true_theta([0.0, 0.0])
    with pytest.raises(ValueError, match="dimension"):
        log_posterior_at_true_theta([0.0, 0.0, 0.0], samples)
    with pytest.raises(ValueError, match="NaN"):
        log_posterior_at_true_theta([float("nan"), 0.0], samples)
    with pytest.raises(ValueError, match="singular"):
        log_posterior_at_true_theta([0.0, 0.0], torch.ones(100, 2))


def _correlated(n: int, seed: int, rho: float = 0.95) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return torch.stack([z[:, 0], rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]], dim=1)


def test_closure_is_zero_for_the_simulator_and_one_for_the_product_of_marginals():
    simulated = _correlated(1600, seed=100)
    options = dict(seed=0, classifier_kwargs={"n_estimators": 50})
    # independent draws of the same distribution: closure ≈ 0
    same = closure(_correlated(800, seed=200), simulated, **options)
    # draws of the product of the marginals (columns shuffled independently): closure ≈ 1
    other = _correlated(800, seed=400)
    generator = torch.Generator().manual_seed(300)
    marginals = torch.stack([c[torch.randperm(800, generator=generator)] for c in other.T], 1)
    product = closure(marginals, simulated, **options)
    # over 5 seeds: 0.05 ± 0.07 and 1.02 ± 0.08 (two C2ST accuracies of 800 vs 800 rows, each
    # ±0.018, divided by a unit of ≈ 0.3): 0.25 is > 3 sd of either
    assert abs(same) < 0.25 and abs(product - 1.0) < 0.25


def test_closure_needs_dependent_features():
    generator = torch.Generator().manual_seed(0)
    independent = torch.randn(1600, 2, generator=generator, dtype=torch.float64)
    with pytest.raises(ValueError, match="independent"):
        closure(independent[:400], independent[400:], classifier_kwargs={"n_estimators": 50})
