"""Priors are rebuilt on another device with the same density, or refused clearly."""

import warnings

import pytest
import torch
from sbi.utils import BoxUniform, MultipleIndependent, process_prior
from torch.distributions import Beta, Gamma, Independent, LogNormal, MultivariateNormal, Normal

from sbi_mflow.priors import _rebuild, prior_on_device

PRIORS = {
    "box": lambda: BoxUniform(-torch.ones(2), torch.ones(2)),
    "mvn": lambda: MultivariateNormal(torch.zeros(2), torch.tensor([[1.0, 0.3], [0.3, 2.0]])),
    "mvn-float64-tril": lambda: MultivariateNormal(
        torch.zeros(2, dtype=torch.float64), scale_tril=torch.eye(2, dtype=torch.float64)),
    "independent-normal": lambda: Independent(Normal(torch.zeros(2), torch.ones(2)), 1),
    "independent-gamma": lambda: Independent(Gamma(2 * torch.ones(2), torch.ones(2)), 1),
    "independent-lognormal": lambda: Independent(LogNormal(torch.zeros(2), torch.ones(2)), 1),
    "multiple-independent": lambda: MultipleIndependent(
        [Gamma(torch.ones(1), torch.ones(1)), Beta(torch.ones(1), 2 * torch.ones(1))]),
}


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_rebuilt_prior_has_the_same_density_and_dtype(name):
    prior = PRIORS[name]()
    rebuilt = _rebuild(prior, torch.device("cpu"))
    assert rebuilt is not prior and type(rebuilt) is type(prior)
    theta = prior.sample((50,))
    # the same parameters in the same formula: equal up to float rounding
    torch.testing.assert_close(rebuilt.log_prob(theta), prior.log_prob(theta))
    assert rebuilt.sample((3,)).dtype == theta.dtype


def test_same_device_is_a_no_op_and_unknown_priors_get_one_clear_error():
    prior = PRIORS["box"]()
    assert prior_on_device(prior, "cpu") is prior

    class UserPrior:
        def sample(self, sample_shape=()):
            return torch.randn(*sample_shape, 2)

        def log_prob(self, theta):
            return -0.5 * theta.pow(2).sum(-1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sbi: no bounds, estimated moments
        wrapped, *_ = process_prior(UserPrior())
    assert prior_on_device(wrapped, "cpu") is wrapped
    with pytest.raises(ValueError, match="Build it on the device"):
        prior_on_device(wrapped, "meta")
