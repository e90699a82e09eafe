"""Every prior sbi accepts, in float32 and float64: train briefly, sample, check the draws.

BoxUniform, MultivariateNormal (sbi's Gaussian examples; it used to crash inside Pyro with
a float/double mismatch), Independent Normal / Gamma / LogNormal, sbi's MultipleIndependent
and a user prior passed through sbi's ``process_prior``. sbi trains on float32 θ whatever
the prior's dtype (``append_simulations`` asserts it), so θ is cast for training; samples
come back in the dtype of the prior's own draws, inside its support.
"""

import warnings

import pytest
import torch
from sbi.utils import BoxUniform, MultipleIndependent, process_prior
from torch.distributions import Gamma, Independent, LogNormal, MultivariateNormal, Normal

import sbi_mflow


class _UserPrior:
    """A prior that is not a torch Distribution: uniform on [-1, 2]², as a user writes it."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def sample(self, sample_shape=()):
        return torch.rand(*sample_shape, 2, dtype=self.dtype) * 3.0 - 1.0

    def log_prob(self, theta):
        inside = ((theta >= -1.0) & (theta <= 2.0)).all(-1)
        value = -2.0 * torch.log(torch.tensor(3.0, dtype=theta.dtype))
        return torch.where(inside, value, torch.tensor(-torch.inf, dtype=theta.dtype))


def _prior(name: str, dtype: torch.dtype):
    zero, one = torch.zeros(2, dtype=dtype), torch.ones(2, dtype=dtype)
    scalar = lambda value: torch.tensor([value], dtype=dtype)  # noqa: E731
    if name == "box":
        return BoxUniform(-2 * one, 2 * one)
    if name == "mvn":
        return MultivariateNormal(zero, torch.diag(torch.tensor([1.0, 0.25], dtype=dtype)))
    if name == "normal":
        return Independent(Normal(zero, one), 1)
    if name == "gamma":
        return Independent(Gamma(2 * one, 2 * one), 1)
    if name == "lognormal":
        return Independent(LogNormal(zero, 0.5 * one), 1)
    if name == "multiple":
        return MultipleIndependent([Gamma(scalar(2.0), scalar(2.0)),
                                    Normal(scalar(0.0), scalar(1.0))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no mean/variance: estimated by sbi
        prior, _, _ = process_prior(_UserPrior(dtype), custom_prior_wrapper_kwargs=dict(
            lower_bound=-one, upper_bound=2 * one))
    return prior


def _simulate(theta: torch.Tensor) -> torch.Tensor:
    """x on a 2-D manifold in R^3 with a little noise."""
    generator = torch.Generator().manual_seed(0)
    t = theta.float()
    noise = 0.1 * torch.randn(len(t), 2, generator=generator)
    return torch.cat([t + noise, (torch.sin(t[:, :1]) * t[:, 1:])], 1)


PRIORS = ["box", "mvn", "normal", "gamma", "lognormal", "multiple", "user"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", PRIORS)
def test_every_prior_sbi_accepts_trains_and_samples(name, dtype):
    torch.manual_seed(0)
    prior = _prior(name, dtype)
    theta = prior.sample((200,))
    x = _simulate(theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "max_num_epochs reached", short chains
        inference = sbi_mflow.ManifoldNLE(
            prior,
            density_estimator=sbi_mflow.manifold_likelihood_nn(
                "mflow", 2, outer_layers=2, inner_layers=2, hidden_features=16),
            show_progress_bars=False, tracker=sbi_mflow.NullTracker(),
        )
        inference.append_simulations(theta.float(), x).train(max_num_epochs=2)
        posterior = inference.build_posterior(num_chains=2, warmup_steps=10, thin=1,
                                              num_init_candidates=100, check_convergence=False)
        samples = posterior.sample((6, 2), x=x[:3], seed=0)
    expected_dtype = prior.sample((1,)).dtype  # sbi's wrappers may turn float64 into float32
    assert samples.shape == (6, 2, 2) and samples.dtype == expected_dtype
    assert torch.isfinite(samples).all()
    inside = prior.support.check(samples.reshape(-1, 2))
    assert (inside.all(-1) if inside.dim() > 1 else inside).all()
    log_prob = posterior.log_prob(samples.reshape(-1, 2), x=x[:3])
    assert log_prob.shape == (12,) and torch.isfinite(log_prob).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batched = posterior.sample_batched((4,), x=x[:3], seed=0, num_chains=2)  # 3 obs
    assert batched.shape == (4, 3, 2) and batched.dtype == expected_dtype
    inside = prior.support.check(batched.reshape(-1, 2))
    assert (inside.all(-1) if inside.dim() > 1 else inside).all()
    log_probs = posterior.log_prob_batched(batched, x=x[:3])
    assert log_probs.shape == (4, 3) and torch.isfinite(log_probs).all()
