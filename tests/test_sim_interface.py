"""The shared Simulator interface, and that sbi accepts the simulators and their priors."""

import pytest
import torch
from sbi.inference import simulate_for_sbi
from sbi.utils import process_prior, process_simulator

import simulators
from simulators import (
    ConditionalSphere,
    LorenzAttractor,
    ParticleDecay,
    PolynomialSurface,
    Simulator,
)

CONDITIONAL = [PolynomialSurface, ConditionalSphere, ParticleDecay]


def test_exports():
    assert set(simulators.__all__) >= {
        "Simulator", "PolynomialSurface", "ConditionalSphere", "LorenzAttractor", "ParticleDecay"
    }  # fmt: skip
    for cls in CONDITIONAL + [LorenzAttractor]:
        assert issubclass(cls, Simulator)


@pytest.mark.parametrize("cls", CONDITIONAL)
def test_conditional_interface_and_sbi(cls):
    sim = cls()
    assert sim.manifold_dim < sim.data_dim
    assert sim.default_theta.shape == (sim.param_dim,)
    assert torch.isfinite(sim.prior.log_prob(sim.default_theta)).all()
    prior, _, prior_returns_numpy = process_prior(sim.prior)
    simulator = process_simulator(sim, prior, prior_returns_numpy)
    torch.manual_seed(0)
    theta, x = simulate_for_sbi(simulator, prior, 20, simulation_batch_size=10,
                                show_progress_bar=False)  # fmt: skip
    assert theta.shape == (20, sim.param_dim) and x.shape == (20, sim.data_dim)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    x1, t1 = sim.simulate_with_score(theta)
    assert x1.shape == x.shape and t1.shape == theta.shape and t1.dtype == torch.float32
    ll = sim.log_likelihood(x, theta)
    assert ll.shape == (20,) and torch.isfinite(ll).all()
    assert sim.distance_to_manifold(x).shape == (20,)


def test_lorenz_interface(tmp_path, monkeypatch):
    monkeypatch.setenv("SBI_MFLOW_CACHE", str(tmp_path))
    sim = LorenzAttractor(num_trajectories=1, duration=20.0, burn_in=5.0)
    assert sim.prior is None and sim.param_dim == 0
    assert sim(torch.empty(4, 0)).shape == (4, sim.data_dim)
