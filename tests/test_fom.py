"""FOM: a flow on a prescribed manifold, on the simulators' own charts and a user's chart."""

import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import sbi_mflow
from sbi_mflow.sampling import ChartPotential, ConvergenceWarning
from sbi_mflow.tracking import NullTracker
from simulators import ConditionalSphere, PolynomialSurface

SMALL = dict(inner_layers=2, hidden_features=16)


def _perturb(estimator, scale=0.1):
    """Move the inner flow's weights away from its near-identity initialisation."""
    with torch.no_grad():
        for parameter in estimator.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return estimator


def _polynomial_fom(num=200, seed=0):
    torch.manual_seed(seed)
    simulator = PolynomialSurface()
    theta = simulator.prior.sample((num,))
    build = sbi_mflow.manifold_likelihood_nn("fom", chart=simulator.manifold_chart(), **SMALL)
    estimator = _perturb(build(theta, simulator(theta))).double().eval()
    return simulator, estimator


def _inner_log_density(estimator, u, theta):
    """log q(u | θ) of the inner flow, from its pieces: the standardisation s(u) = (u − m)/σ,
    the coupling stack h', and the standard normal: log N(h'(s(u))) + log|det ∂h'| − Σ log σ."""
    inner = estimator.inner
    value = (u - inner.standardize.mean) / inner.standardize.std
    context = estimator.embedding_net(theta)
    log_det = -torch.log(inner.standardize.std).sum().expand(u.shape[0])
    for transform in inner._transforms:
        value, term = transform(value, context=context)
        log_det = log_det + term
    return -0.5 * (value.pow(2).sum(-1) + u.shape[1] * math.log(2 * math.pi)) + log_det


def test_log_prob_is_the_inner_density_of_the_true_chart_coordinates_and_the_volume_term():
    simulator, estimator = _polynomial_fom()
    theta = simulator.prior.sample((6,)).double()
    x = simulator(theta)  # float64, exactly on the surface
    z, _ = simulator.chart(x)  # the simulator's own inverse chart
    jacobian = torch.autograd.functional.jacobian(
        lambda u: simulator.embed_latent(u).sum(0), z).permute(1, 0, 2)  # (B, 3, 2)
    half_log_det = 0.5 * torch.logdet(jacobian.mT @ jacobian)
    _, gradient = simulator.height(z)  # R is orthogonal: JᵀJ = I + ∇F ∇Fᵀ
    # float64: the autograd Jacobian and the analytic one agree to rounding (measured 2e-16)
    torch.testing.assert_close(half_log_det, 0.5 * torch.log1p(gradient.pow(2).sum(1)),
                               rtol=1e-12, atol=1e-12)
    expected = _inner_log_density(estimator, z, theta) - half_log_det
    # float64 values of order 10 through the same couplings; the volume terms differ by the
    # Jacobians' graphs and QR vs logdet of JᵀJ: rounding ~1e-15 (measured ≤ 9e-16). 1e-10
    # is far above that and far below any missing term (the standardisation's Σ log σ ≈ 1)
    torch.testing.assert_close(estimator.log_prob(x, theta)[0], expected.detach(),
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(estimator.chart_log_prob(x, theta)[0],
                               _inner_log_density(estimator, z, theta).detach(),
                               rtol=1e-10, atol=1e-10)


def test_the_manifold_maps_are_the_true_chart():
    simulator, estimator = _polynomial_fom()
    x = simulator(simulator.prior.sample((50,)).double())
    # |x| ≤ 5 here; a round trip is two 3×3 products and the degree-5 polynomial, each a few
    # float64 roundings of |x|: ~1e-15 (measured ≤ 3e-15). 1e-12 is far above rounding
    # and far below a wrong chart (the surface's height varies by O(1))
    torch.testing.assert_close(estimator.encode(x), simulator.chart(x)[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(estimator.project(x), x, rtol=0, atol=1e-12)
    assert estimator.reconstruction_error(x).max() < 1e-12
    u = torch.randn(20, 2, dtype=torch.float64)
    torch.testing.assert_close(estimator.decode(u), simulator.embed_latent(u), rtol=0,
                               atol=1e-12)
    samples = estimator.sample((10,), torch.zeros(2, 1, dtype=torch.float64)).reshape(-1, 3)
    assert simulator.distance_to_manifold(samples).max() < 1e-12  # on the surface
    off = x + 0.3 * torch.randn_like(x)
    projected = estimator.project(off)
    assert estimator.reconstruction_error(off).min() > 1e-6  # off the surface
    torch.testing.assert_close(estimator.project(projected), projected, rtol=0, atol=1e-12)


def test_fom_trains_its_density_only_and_samples_the_posterior_with_the_chart_potential():
    torch.manual_seed(0)
    simulator = PolynomialSurface()
    theta = simulator.prior.sample((500,))
    x = simulator(theta)
    build = sbi_mflow.manifold_likelihood_nn("fom", chart=simulator.manifold_chart(), **SMALL)
    inference = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=build,
                                      show_progress_bars=False, tracker=NullTracker())
    estimator = inference.append_simulations(theta, x).train(max_num_epochs=4,
                                                             density_epochs=4)
    # no manifold phase and no stall check: the chart is exact; only the density phase runs
    assert [(p.name, p.epochs_done) for p in inference._schedule.phases] == [("density", 4)]
    assert inference.summary["manifold_check"] is None
    assert all(math.isfinite(e["validation_total"]) for e in inference.summary["phases"])
    posterior = inference.build_posterior(num_chains=2, warmup_steps=20, thin=1)
    assert isinstance(posterior.potential_fn, ChartPotential)
    x_o = simulator(simulator.default_theta.expand(5, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 20 draws on purpose
        samples = posterior.sample((20,), x=x_o, show_progress_bars=False)
    assert samples.shape == (20, 1) and torch.isfinite(samples).all()
    assert simulator.prior.support.check(samples).all()
    inference.train(max_num_epochs=2, density_epochs=2,
                    resume_training=True)  # continues the density phase
    assert [(p.name, p.epochs_done) for p in inference._schedule.phases] == [("density", 6)]
    # the other schedules: one loss over the inner flow, or a clear refusal
    estimator = inference.train(schedule="simultaneous", max_num_epochs=1,
                                retrain_from_scratch=True)
    assert inference.summary["phases"][-1]["phase"] == "likelihood"
    with pytest.raises(ValueError, match="prescribed"):
        inference.train(schedule="alternating", max_num_epochs=1)
    assert estimator.spec.name == "fom"


# (simulations, learning rate, batch, E): 300 rows at the default rate still improve at
# epoch 4 = 4E (0.005 nats per epoch); 100 rows at rate 1e-2 overfit within 3 epochs (best
# epoch 1-3 on seeds 0-2, so early stopping ends the phase far below 4E = 40)
@pytest.mark.parametrize(("num", "rate", "batch", "budget", "stops_early"),
                         [(300, None, None, 1, False), (100, 1e-2, 20, 10, True)])
def test_the_default_density_phase_ends_at_early_stopping_or_at_four_times_the_budget(
        num, rate, batch, budget, stops_early):
    """Default ``density_epochs``: the phase runs until its validation loss has not improved
    for ``stop_after_epochs`` epochs, at most 4 × ``max_num_epochs``."""
    torch.manual_seed(0)
    simulator = PolynomialSurface()
    theta = simulator.prior.sample((num,))
    build = sbi_mflow.manifold_likelihood_nn("fom", chart=simulator.manifold_chart(), **SMALL)
    inference = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=build,
                                      show_progress_bars=False, tracker=NullTracker())
    inference.append_simulations(theta, simulator(theta)).train(
        max_num_epochs=budget, stop_after_epochs=2, learning_rate=rate,
        training_batch_size=batch)
    losses = [e["validation_total"] for e in inference.summary["phases"]]
    best = losses.index(min(losses))
    if stops_early:  # the 2 epochs after the best did not beat it, and the phase ended
        assert len(losses) == best + 1 + 2 < 4 * budget
    else:
        assert len(losses) == 4 * budget
    assert inference._schedule.best_validation_loss == min(losses)


def test_a_registered_chart_saves_and_loads_by_name(tmp_path):
    simulator, estimator = _polynomial_fom()
    path = sbi_mflow.save(estimator, tmp_path / "fom.pt")
    payload = torch.load(path, weights_only=True)  # plain data only
    assert payload["chart"] == {"name": "polynomial-surface", "options": {}}
    loaded = sbi_mflow.load(path).double()
    x = simulator(simulator.prior.sample((5,)).double())
    theta = torch.zeros(5, 1, dtype=torch.float64)
    # the same weights (saved in float64) and operations: equal to rounding of reduction
    # order (~1e-15); the float64 defaults (1e-7) are far above that
    torch.testing.assert_close(loaded.log_prob(x, theta), estimator.log_prob(x, theta))


class TiltedPlane(nn.Module):
    """x = c + scale · A u on a plane in R³ (A orthonormal columns, c a point: buffers), so
    u = Aᵀ(x − c) / scale; scale ≪ 1 makes u far larger than x."""

    manifold_dim, data_dim = 2, 3

    def __init__(self, seed: int = 0, scale: float = 1e-3) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator))
        self.register_buffer("basis", basis[:, :2].contiguous())
        self.register_buffer("centre", torch.randn(3, generator=generator))
        self.scale = scale

    def decode(self, u):
        return self.centre + self.scale * u @ self.basis.T

    def encode(self, x):
        return (x - self.centre) @ self.basis / self.scale


def test_a_user_chart_is_passed_back_to_load_and_the_inner_flow_sees_standardised_u(tmp_path):
    torch.manual_seed(0)
    plane = TiltedPlane(seed=0)
    theta = torch.rand(300, 1)
    x = plane.decode((theta + torch.randn(300, 2)) / plane.scale)  # O(1) points on the plane
    estimator = _perturb(sbi_mflow.manifold_likelihood_nn("fom", chart=plane, **SMALL)(theta, x))
    u = estimator.encode(x)
    assert u.std(0).min() > 100  # the chart's coordinates are 1000x the data's
    standardised, _ = estimator.inner.standardize(u)
    # the splines (identity outside [-6, 6]) see mean 0 and sd 1: the training statistics
    # of these very points, up to float32 rounding (measured ≤ 2e-8)
    torch.testing.assert_close(standardised.mean(0), torch.zeros(2), rtol=0, atol=1e-4)
    torch.testing.assert_close(standardised.std(0), torch.ones(2), rtol=0, atol=1e-4)
    # the volume term of an isotropic linear chart: −½ log det((scale A)ᵀ(scale A)) = −2 log
    # scale = 13.8 (float32 Jacobian by autograd and QR: measured 1 ulp = 1e-6; 1e-5 + 1e-5
    # · 13.8 is 250 ulps and still fails a missing factor of the scale)
    torch.testing.assert_close(-0.5 * estimator.log_det_metric(u[:4]),
                               torch.full((4,), -2 * math.log(plane.scale)),
                               rtol=1e-5, atol=1e-5)

    path = sbi_mflow.save(estimator, tmp_path / "plane.pt")
    assert torch.load(path, weights_only=True)["chart"] is None
    with pytest.raises(ValueError, match=r"chart=my_chart"):
        sbi_mflow.load(path)
    # a chart built with another seed: the saved buffers (basis, centre) overwrite its own
    loaded = sbi_mflow.load(path, chart=TiltedPlane(seed=1))
    torch.testing.assert_close(loaded.chart.prescribed.basis, plane.basis, rtol=0, atol=0)
    # the same float32 weights, buffers and operations in one process: bit for bit
    torch.testing.assert_close(loaded.log_prob(x[:8], theta[:8]),
                               estimator.log_prob(x[:8], theta[:8]))


@pytest.mark.parametrize(("n", "d"), [(1, 2), (2, 3), (3, 5)])
def test_the_sphere_chart_is_a_stereographic_chart_of_the_sphere(n, d):
    simulator = ConditionalSphere(manifold_dim=n, data_dim=d)
    chart = simulator.manifold_chart().double()
    u = 2.0 * torch.randn(100, n, dtype=torch.float64)
    x = chart.decode(u)
    # float64 round trips of |u| ≤ 8 through a few products and one division by
    # 1 − y_p ≥ 2/65: |y| = 1 to 2e-16 and u to 1.1e-14 absolute (measured); 1e-12 (plus
    # 1e-12·|u| for u) is far above rounding and far below a wrong formula (O(1))
    torch.testing.assert_close(x[:, : n + 1].norm(dim=1), torch.ones(100, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert torch.equal(x[:, n + 1:], torch.zeros(100, d - n - 1, dtype=torch.float64))
    torch.testing.assert_close(chart.encode(x), u, rtol=1e-12, atol=1e-12)
    # conformal: JᵀJ = (2 / (1 + |u|²))² I_n, from autograd against the closed form (float64
    # entries ≤ 4: measured 4e-16 apart)
    jacobian = torch.autograd.functional.jacobian(lambda p: chart.decode(p).sum(0),
                                                  u[:10]).permute(1, 0, 2)
    factor = 2.0 / (1.0 + u[:10].pow(2).sum(1))
    eye = torch.eye(n, dtype=torch.float64).expand(10, n, n)
    torch.testing.assert_close(jacobian.mT @ jacobian, factor.pow(2)[:, None, None] * eye,
                               rtol=1e-12, atol=1e-12)
    # the excluded point e_{n-1} lies opposite every mean direction: μᵀe_{n-1} = cos c ≤ 0
    theta = simulator.prior.sample((1000,)).double()
    assert (simulator.mean_direction(theta)[:, n - 1] <= 1e-12).all()


def test_a_fom_on_the_sphere_has_the_conformal_volume_term():
    torch.manual_seed(0)
    simulator = ConditionalSphere(manifold_dim=2, data_dim=4)
    theta = simulator.prior.sample((200,))
    build = sbi_mflow.manifold_likelihood_nn("fom", chart=simulator.manifold_chart(), **SMALL)
    estimator = build(theta, simulator(theta)).double()
    u = estimator.encode(simulator(theta[:8].double()))
    expected = 2 * 2 * torch.log(2.0 / (1.0 + u.pow(2).sum(1)))  # log det = 2n log factor
    # float64, batched reverse-mode Jacobian and QR against the closed form (|value| ≤ 3:
    # measured 4e-16)
    torch.testing.assert_close(estimator.log_det_metric(u), expected, rtol=1e-12, atol=1e-12)


def test_the_lifted_sbibm_tasks_expose_their_chart(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sbibm = pytest.importorskip("benchmarks._sbibm")
    lift = sbibm.Lift(2, 6, seed=3, centre=0.5, scale=2.0)
    chart = lift.manifold_chart()
    u = torch.randn(30, 2, dtype=torch.float64)
    torch.testing.assert_close(chart.decode(u), lift(u), rtol=0, atol=0)  # the same maths
    # float64 round trip through a 6×6 rotation: ~1e-15 (measured 6e-16)
    torch.testing.assert_close(chart.encode(chart.decode(u)), u, rtol=0, atol=1e-12)
    theta = torch.rand(100, 1)
    x = lift(theta + 0.3 * torch.randn(100, 2)).float()
    build = sbi_mflow.manifold_likelihood_nn("fom", chart=chart, **SMALL)
    estimator = build(theta, x)
    path = sbi_mflow.save(estimator, tmp_path / "lifted.pt")
    assert torch.load(path, weights_only=True)["chart"]["name"] == "sbibm-lift"
    loaded = sbi_mflow.load(path)
    # the same float32 weights and operations in one process: bit for bit
    torch.testing.assert_close(loaded.log_prob(x[:5], theta[:5]),
                               estimator.log_prob(x[:5], theta[:5]))
