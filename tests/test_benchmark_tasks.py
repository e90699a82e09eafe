"""The benchmark tasks' own references (``benchmarks.tasks``) against independent truth."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

tasks = pytest.importorskip("benchmarks.tasks")


def test_slcp_log_likelihood_matches_scipy():
    """Σ over the 4T points of log N(x | m(θ), S(θ)), against scipy in float64."""
    torch.manual_seed(0)
    theta = 6 * torch.rand(7, 5, dtype=torch.float64) - 3
    x = tasks.slcp(theta[:1].expand(3, 5)).reshape(3, 8)  # T = 3 trials of one θ
    ours = tasks.slcp_log_likelihood(theta, x)
    for i, th in enumerate(theta.numpy()):
        s1, s2, rho = th[2] ** 2, th[3] ** 2, np.tanh(th[4])
        cov = [[s1**2 + 1e-6, rho * s1 * s2], [rho * s1 * s2, s2**2 + 1e-6]]
        truth = multivariate_normal(th[:2], cov).logpdf(x.reshape(-1, 2).numpy()).sum()
        # Both are float64 sums of 12 terms whose Cholesky/inverse of a 2×2 matrix carry
        # relative rounding ~1e-16 × condition number (≤ ~1e8 when s is small): 1e-6 relative.
        assert ours[i].item() == pytest.approx(truth, rel=1e-6, abs=1e-6)


@pytest.mark.slow
def test_slcp_reference_matches_sbibm_for_one_trial():
    """NUTS on the quadrant plus random sign flips reproduces sbibm's reference posterior of
    observation 1 (one trial): C2ST of 1000 against 1000 draws near 0.5."""
    from benchmarks._sbibm import load_task_files
    from sbi_mflow.metrics import c2st

    x_o, reference = load_task_files("slcp", 1)
    draws = tasks.slcp_reference(x_o.reshape(1, 8), 1000, seed=1)
    subset = reference[torch.randperm(reference.shape[0], generator=torch.Generator()
                                      .manual_seed(0))[:1000]].float()
    # Measured 0.4995; the C2ST of two samples of one law at 1000 + 1000 draws has a
    # standard deviation of about 0.011, so 0.55 is ~4.5 of them above chance.
    assert c2st(draws, subset, classifier="mlp", seed=0) < 0.55
    # Both signs of θ₂ and θ₃ (the four modes) appear about equally often.
    assert ((draws[:, 2:4] > 0).double().mean(0) - 0.5).abs().max() < 0.06


def test_lifted_gaussian_linear_likelihood_gives_the_closed_form_posterior():
    """π(θ) Π_t p(x_t | θ) from the task's likelihood (through the inverse lift) differs
    from the closed-form posterior N(Σ x / (T + 1), 0.1 / (T + 1) I) by a θ-free constant."""
    task = tasks.TASKS["lifted_gaussian_linear"]()
    x = task.observe(1, 20)  # (20, 64), float32 lift of the 10-D trials
    theta = task.reference(1, 20, 6).double()  # six θ near the posterior's bulk
    unnormalised = (task.prior.log_prob(theta.float()).double()
                    + torch.stack([task.log_likelihood(x, t.expand(20, 10)).sum()
                                   for t in theta]))
    with torch.no_grad():
        u = task.chart().encode(x.double())  # the 10-D trials, through the task's true chart
    mean = u.sum(0) / 21
    exact = torch.distributions.Normal(mean, (0.1 / 21) ** 0.5).log_prob(theta).sum(-1)
    difference = unnormalised - exact
    # Everything is float64 but the prior's log-density (float32, |log π| ≈ 10: rounding
    # ~1e-6); a wrong mean or variance in the likelihood moves the difference by O(1)
    # across six θ of the posterior's bulk, so 1e-2 separates the two by far.
    assert (difference - difference.mean()).abs().max() < 1e-2


def test_slcp_pointwise_likelihood_sums_to_the_iid_likelihood():
    """Σ_t of the per-pair likelihood equals ``slcp_log_likelihood`` of the T trials (which
    the scipy test above checks), for each θ."""
    torch.manual_seed(1)
    theta = 6 * torch.rand(4, 5, dtype=torch.float64) - 3
    x = tasks.slcp(theta[:1].expand(3, 5)).double()  # (3, 8)
    pointwise = torch.stack([tasks.slcp_pointwise_log_likelihood(x, t.expand(3, 5)).sum()
                             for t in theta])
    # Same float64 terms summed in another order: rounding ~1e-15 relative.
    torch.testing.assert_close(pointwise, tasks.slcp_log_likelihood(theta, x), rtol=1e-10,
                               atol=1e-10)


def test_true_likelihood_estimator_follows_sbi_shapes():
    """``exact_likelihood``'s estimator: log_prob of x (S, B, d) given θ (B, p) is (S, B),
    each entry the task's likelihood of that pair."""
    methods = pytest.importorskip("benchmarks.methods")
    task = tasks.TASKS["lifted_slcp"]()
    estimator = methods._TrueLikelihood(task.log_likelihood, 48, 5)
    torch.manual_seed(2)
    theta = task.prior.sample((3,))
    x = task.simulate(theta.repeat(2, 1)).reshape(2, 3, 48)
    values = estimator.log_prob(x, theta)
    assert values.shape == (2, 3)
    expected = torch.stack([task.log_likelihood(x[s], theta) for s in range(2)])
    # The inverse lift of 6 rows and of 3 rows may block its float64 matmul differently:
    # rounding ~1e-16 relative per term, summed over 8 coordinates and 4 points.
    torch.testing.assert_close(values, expected.double(), rtol=1e-12, atol=1e-12)
