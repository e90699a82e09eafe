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
