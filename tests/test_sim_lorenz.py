"""Tests of simulators.LorenzAttractor (small settings, temporary cache directory)."""

import numpy as np
import pytest
import torch

from simulators import LorenzAttractor
from simulators.lorenz import BETA, RHO, SIGMA


@pytest.fixture
def small(tmp_path, monkeypatch):
    monkeypatch.setenv("SBI_MFLOW_CACHE", str(tmp_path))
    return LorenzAttractor(num_trajectories=3, duration=60.0, dt=0.01, burn_in=10.0)


def test_generation_is_cached_and_reproducible(small, tmp_path, monkeypatch):
    data = small.data()
    assert data.shape == (3 * 6000, 3) and data.dtype == torch.float32
    assert small.cache_file.parent == tmp_path and small.cache_file.exists()
    again = LorenzAttractor(num_trajectories=3, duration=60.0, dt=0.01, burn_in=10.0)
    monkeypatch.setattr(again, "generate", lambda: pytest.fail("should load from the cache"))
    assert torch.equal(again.data(), data)
    # regeneration from scratch gives identical numbers
    assert np.array_equal(small.generate(), data.numpy())


def test_points_follow_the_lorenz_flow_after_burn_in(small):
    pts = small.data().double().reshape(3, -1, 3)
    dt = small.dt
    deriv = (pts[:, 2:] - pts[:, :-2]) / (2 * dt)
    x, y, z = pts[:, 1:-1, 0], pts[:, 1:-1, 1], pts[:, 1:-1, 2]
    rhs = torch.stack([SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z], dim=-1)
    rel = (deriv - rhs).norm(dim=-1) / rhs.norm(dim=-1).clamp_min(1.0)
    # central differences: O(dt²) error, measured median 1.8e-3 (float32 storage adds only
    # eps·|x|/dt ≈ 3e-4 absolute, ~3e-6 relative); 1e-2 fails a wrong right-hand side
    assert rel.median().item() < 1e-2
    # on the attractor: bounded region, z ~ 23.5 on average, both wings visited. Chaotic, so
    # the last bit of scipy/numpy arithmetic changes the trajectories but not these limits:
    # measured |x| ≤ 18.3, |y| ≤ 24.8, 4.7 ≤ z ≤ 45.4, mean z 23.6 (per trajectory 23.4-23.8)
    # and 25-28 % of the points beyond each x = ±5; the attractor's envelope (|x| ≲ 20,
    # |y| ≲ 27, z ≲ 48) keeps the range bounds ≥ 5 away whatever the trajectories, and the
    # mean's bounds are ≥ 3 from 23.5, ≫ its spread over trajectories (±0.2)
    flat = pts.reshape(-1, 3)
    assert flat[:, 0].abs().max() < 25 and flat[:, 1].abs().max() < 35
    assert (flat[:, 2] > 0).all() and flat[:, 2].max() < 55
    assert 20 < flat[:, 2].mean().item() < 27
    assert (flat[:, 0] > 5).any() and (flat[:, 0] < -5).any()


def test_sampling_interface(small):
    torch.manual_seed(0)
    a = small.sample(500)
    torch.manual_seed(0)
    b = small(torch.zeros(500, 0))
    assert a.shape == (500, 3) and torch.equal(a, b)
    x, t = small.simulate_with_score(7)
    assert x.shape == (7, 3) and t.shape == (7, 0)
    assert small.param_dim == 0 and small.prior is None and small.default_theta.shape == (0,)
    # every sample is a stored point
    data = small.data()
    assert (a[:20, None, :] == data[None]).all(-1).any(-1).all()


def test_errors(small):
    with pytest.raises(ValueError, match="unconditional"):
        small(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="non-negative int"):
        small.sample(-1)
    with pytest.raises(NotImplementedError, match="not tractable"):
        small.log_likelihood(torch.zeros(2, 3))
    with pytest.raises(NotImplementedError):
        small.distance_to_manifold(torch.zeros(2, 3))
    with pytest.raises(ValueError):
        LorenzAttractor(num_trajectories=0)


@pytest.mark.slow
def test_default_generation_time(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("SBI_MFLOW_CACHE", str(tmp_path))
    start = time.perf_counter()
    data = LorenzAttractor().data()
    assert data.shape == (400000, 3)
    assert time.perf_counter() - start < 30  # a time budget (wall clock), not a tolerance
