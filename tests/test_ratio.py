"""ScoreAugmentedNRE: sbi's NRE-C plus the joint score's regression term, checked against a
Gaussian simulator whose log-ratio and joint score are known in closed form."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters
from torch import nn

from sbi_mflow.ratio import ScoreAugmentedNRE, score_regression

S, TAU = 0.5, 1.0  # x ~ N(θ, S² I), θ ~ N(0, TAU² I)


def _prior(dim: int = 2):
    return torch.distributions.MultivariateNormal(torch.zeros(dim), TAU**2 * torch.eye(dim))


def _simulate(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x = θ + S z and its joint score ∇_θ log p(x, z|θ) = (x − θ) / S²."""
    x = theta + S * torch.randn_like(theta)
    return x, (x - theta) / S**2


class ExactLogRatio(nn.Module):
    """log N(x; θ, S²) − log N(x; 0, S² + TAU²), summed over coordinates, plus c·‖θ‖²/2."""

    def __init__(self, c: float = 0.0) -> None:
        super().__init__()
        self.c = c

    def forward(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        likelihood = -0.5 * ((x - theta) / S) ** 2 - math.log(S)
        evidence = -0.5 * x**2 / (S**2 + TAU**2) - 0.5 * math.log(S**2 + TAU**2)
        return (likelihood - evidence).sum(-1) + 0.5 * self.c * theta.pow(2).sum(-1)


def test_score_regression_vanishes_at_the_true_ratio_and_measures_a_wrong_one():
    torch.manual_seed(0)
    theta = _prior().sample((64,)).double()
    x, score = _simulate(theta)
    exact = score_regression(ExactLogRatio(), theta, x, score)
    # ∇_θ log r = (x − θ)/S² = t exactly; float64 rounding of terms of size ~10: 1e-12
    torch.testing.assert_close(exact, torch.zeros(64, dtype=torch.float64), atol=1e-12, rtol=0)
    wrong = score_regression(ExactLogRatio(c=0.3), theta, x, score)
    # the extra gradient is c θ, so the term is c² ‖θ‖² (same float64 arithmetic)
    torch.testing.assert_close(wrong, 0.09 * theta.pow(2).sum(-1), atol=1e-12, rtol=1e-12)


class _Recording(ScoreAugmentedNRE):
    """Checks, on every training batch, that each score belongs to its own (θ, x) row."""

    batches = 0

    def _get_losses(self, batch, loss_args):
        if len(batch) == 4 and torch.is_grad_enabled():
            theta, x, _, score = batch
            # float32 rows: t = (x − θ)/S² recomputed, rounding of ~1e-6 relative
            torch.testing.assert_close(score, (x - theta) / S**2, atol=1e-5, rtol=1e-5)
            type(self).batches += 1
        return super()._get_losses(batch, loss_args)


def test_training_batches_carry_each_rows_own_score_and_the_posterior_is_nre_cs():
    torch.manual_seed(0)
    prior = _prior()
    theta = prior.sample((400,))
    x, score = _simulate(theta)
    inference = _Recording(prior, score_weight=1.0, show_progress_bars=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inference.append_simulations(theta, x, score=score).train(max_num_epochs=2,
                                                                  training_batch_size=50)
    assert _Recording.batches >= 2 * (360 // 50)  # every training batch of both epochs
    posterior = inference.build_posterior(posterior_parameters=MCMCPosteriorParameters(
        method="slice_np_vectorized", num_chains=4, warmup_steps=10))
    draws = posterior.sample((20,), x=x[:1], show_progress_bars=False)
    assert draws.shape == (20, 2) and torch.isfinite(draws).all()


def test_bad_scores_are_named():
    prior = _prior()
    theta = prior.sample((10,))
    x, score = _simulate(theta)
    with pytest.raises(ValueError, match="needs the joint scores"):
        ScoreAugmentedNRE(prior).append_simulations(theta, x)
    with pytest.raises(ValueError, match="shape"):
        ScoreAugmentedNRE(prior).append_simulations(theta, x, score=score[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        ScoreAugmentedNRE(prior).append_simulations(theta, x, score=score * float("nan"))
    with pytest.raises(ValueError, match="score_weight"):
        ScoreAugmentedNRE(prior, score_weight=-1.0)


def test_ratio_posterior_by_nuts_matches_the_ratios_own_grid_posterior():
    """nuts_posterior(RatioLikelihood(r̂)) samples π(θ) Π_t r̂(x_t, θ): its mean and sd match
    the same target integrated on a grid (independent of any sampler)."""
    import sbi_mflow
    from sbi_mflow.ratio import RatioLikelihood

    torch.manual_seed(0)
    prior = torch.distributions.MultivariateNormal(torch.zeros(1), torch.eye(1))
    theta = prior.sample((500,))
    x, score = _simulate(theta)
    inference = ScoreAugmentedNRE(prior, score_weight=0.1, show_progress_bars=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ratio = inference.append_simulations(theta, x, score=score).train(max_num_epochs=5)
    x_o = x[:5]  # five iid trials
    grid = torch.linspace(-4, 4, 2001).unsqueeze(1)
    with torch.no_grad():
        log_target = prior.log_prob(grid) + sum(
            ratio(grid, x_t.expand(len(grid), 1)).reshape(-1) for x_t in x_o)
    weights = torch.softmax(log_target.double(), 0)
    mean = float((weights * grid[:, 0]).sum())
    sd = float((weights * (grid[:, 0] - mean) ** 2).sum().sqrt())
    posterior = sbi_mflow.nuts_posterior(RatioLikelihood(ratio), prior, num_chains=4,
                                         warmup_steps=100, check_convergence=False)
    draws = posterior.sample((1000,), x=x_o, seed=0)[:, 0].double()
    # 1000 correlated draws with ESS ≳ 250: the mean's MC error is ≲ sd/√250 ≈ 0.063 sd;
    # 5 of them (0.32 sd), and 15% on the sd (its MC error ≈ sd/√(2·250) ≈ 4.5%)
    assert abs(float(draws.mean()) - mean) < 0.32 * sd
    assert abs(float(draws.std()) - sd) < 0.15 * sd
