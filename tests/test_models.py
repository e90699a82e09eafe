"""Model specs: the presets build the parts they always did, parts re-initialise themselves,
the loss of plain training follows the volume term, hand-composed estimators save, load
and retrain, and manifold_dim="auto" asks sbi_mflow.dimension once."""

import math

import pytest
import torch
from helpers import perturbed_estimator
from sbi.neural_nets import likelihood_nn

import sbi_mflow
from sbi_mflow.flows import (
    Chart,
    ChartEncoder,
    ExactChart,
    ManifoldVolume,
    NetworkEncoder,
    OffManifoldGaussian,
)
from sbi_mflow.losses import ChartNLL, NegativeLogLikelihood, SimultaneousLoss, training_loss
from sbi_mflow.tracking import NullTracker
from simulators import PolynomialSurface

SMALL = dict(outer_layers=2, inner_layers=2, hidden_features=16, encoder_hidden_features=16,
             encoder_blocks=1)

#: (chart, encoder, volume, conditional manifold) of each preset, as builders.py composed
#: them by model name before specs existed.
PARTS = {
    "mflow": (Chart, ChartEncoder, ManifoldVolume, False),
    "meflow": (Chart, NetworkEncoder, ManifoldVolume, False),
    "pie": (Chart, ChartEncoder, OffManifoldGaussian, False),
    "pie-conditional": (Chart, ChartEncoder, OffManifoldGaussian, True),
    "fom": (ExactChart, ChartEncoder, ManifoldVolume, False),
}


def _build(model, **options):
    chart = PolynomialSurface().manifold_chart() if model == "fom" else None
    build = sbi_mflow.manifold_likelihood_nn(model, None if chart else 2, chart=chart,
                                             **{**SMALL, **options})
    return build(torch.rand(64, 1), PolynomialSurface()(torch.rand(64, 1) * 2 - 1))


def test_the_preset_table_is_models():
    assert sbi_mflow.MODELS == tuple(sbi_mflow.PRESETS) == tuple(PARTS)


@pytest.mark.parametrize("model", sorted(PARTS))
def test_each_preset_builds_the_parts_it_always_did(model):
    estimator = _build(model, epsilon=0.05)
    chart, encoder, volume, conditional = PARTS[model]
    assert type(estimator.chart) is chart
    assert type(estimator.encoder) is encoder
    assert type(estimator.volume) is volume
    assert estimator.chart.conditional is conditional
    assert estimator.spec == sbi_mflow.PRESETS[model] and estimator.spec.name == model
    if volume is OffManifoldGaussian:
        assert estimator.volume.epsilon == 0.05
    # only a prescribed chart has nothing to learn, and only its u are standardised
    assert estimator.learns_manifold is (chart is Chart)
    assert (estimator.inner.standardize is None) is (chart is Chart)


def test_mflow_log_prob_is_the_formula_of_its_parts():
    """log p(x|θ) = log N(h(u;θ)) + log|det ∂h/∂u| − ½ log det(J_gᵀJ_g)(u), u = f(x)_{1:n},
    with J_g from torch.autograd.functional.jacobian of the decoder."""
    estimator = perturbed_estimator("mflow", 3, 2, param_dim=1, seed=4)
    x = torch.randn(6, 3, dtype=torch.float64) + 0.5
    theta = torch.rand(6, 1, dtype=torch.float64)
    latent, _ = estimator.chart(x)
    u = latent[:, :2]
    z, log_det_inner = estimator.inner(u, context=estimator.embedding_net(theta))
    log_normal = -0.5 * (z.pow(2).sum(-1) + 2 * math.log(2 * math.pi))
    jacobian = torch.autograd.functional.jacobian(
        lambda points: estimator.chart.decode(points).sum(0), u).permute(1, 0, 2)  # (B, d, n)
    expected = log_normal + log_det_inner - 0.5 * torch.logdet(jacobian.mT @ jacobian)
    # float64; the two Jacobians come from different autograd graphs and the log-det from
    # QR vs logdet of JᵀJ: rounding of values of order 10 through 3+2 coupling layers
    # (measured ≤ 5e-14); 1e-9 is far above that and far below any wrong term (≥ 1e-2)
    torch.testing.assert_close(estimator.log_prob(x, theta)[0], expected.detach(),
                               rtol=1e-9, atol=1e-9)


def test_the_loss_of_plain_training_follows_the_volume_term():
    assert isinstance(training_loss(_build("mflow")), SimultaneousLoss)
    assert isinstance(training_loss(_build("meflow")), SimultaneousLoss)
    assert isinstance(training_loss(_build("pie")), NegativeLogLikelihood)
    assert isinstance(training_loss(_build("fom")), ChartNLL)  # nothing to reconstruct
    nsf = likelihood_nn("nsf", num_transforms=1)(torch.rand(20, 1), torch.randn(20, 3))
    assert isinstance(training_loss(nsf), NegativeLogLikelihood)
    estimator = _build("mflow")
    x, theta = PolynomialSurface()(torch.zeros(5, 1)), torch.zeros(5, 1)
    expected = SimultaneousLoss(estimator.config.reconstruction_weight)(estimator, x, theta)
    # the same function of the same float32 inputs: bit for bit (float32 defaults are slack)
    torch.testing.assert_close(estimator.loss(x, theta), expected)


@pytest.mark.parametrize("model", ["mflow", "meflow"])
def test_parts_reinitialise_themselves_and_keep_what_came_from_data(model):
    estimator = _build(model)
    before = {k: v.clone() for k, v in estimator.state_dict().items()}
    estimator.net.reinitialize(manifold=True, inner=False)
    after = {k: v.clone() for k, v in estimator.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    data_derived = ("net.chart.standardize.", "net.chart.alignment.", "net.embedding.")
    assert not any(k.startswith(data_derived + ("net.inner.",)) for k in changed)
    assert any(k.startswith("net.chart.body.") and "permutation" in k for k in changed)
    assert any(k.startswith("net.chart.body.") and k.endswith("weight") for k in changed)
    if model == "meflow":
        assert any(k.startswith("net.encoder.network.") for k in changed)
    estimator.net.reinitialize(manifold=False, inner=True)
    assert any(not torch.equal(after[k], v) for k, v in estimator.state_dict().items()
               if k.startswith("net.inner."))


def test_specs_that_cannot_exist_are_refused():
    with pytest.raises(ValueError, match="prescribed chart is its own encoder"):
        sbi_mflow.ModelSpec(chart="prescribed", volume="off-manifold")
    with pytest.raises(ValueError, match="Unknown encoder"):
        sbi_mflow.ModelSpec(encoder="pca")
    with pytest.raises(ValueError, match="needs the chart"):
        sbi_mflow.manifold_likelihood_nn("fom")
    with pytest.raises(ValueError, match="learns its chart"):
        sbi_mflow.manifold_likelihood_nn("mflow", 2, chart=PolynomialSurface().manifold_chart())
    with pytest.raises(TypeError, match="PrescribedChart"):
        sbi_mflow.manifold_likelihood_nn("fom", chart=torch.nn.Linear(2, 3))
    with pytest.raises(ValueError, match="differs from the chart's"):
        sbi_mflow.manifold_likelihood_nn("fom", 1, chart=PolynomialSurface().manifold_chart())
    with pytest.raises(ValueError, match="int n or 'auto'"):
        sbi_mflow.manifold_likelihood_nn("mflow")


HAND_COMPOSED = [
    sbi_mflow.ModelSpec(encoder="network", volume="off-manifold"),  # Me-flow encoder, PIE
    sbi_mflow.ModelSpec(conditional_manifold=True),  # M-flow density on a θ-dependent chart
]


@pytest.mark.parametrize("spec", HAND_COMPOSED, ids=["meflow-pie", "conditional-mflow"])
def test_a_hand_composed_estimator_saves_loads_and_retrains(spec, tmp_path):
    assert spec.name is None
    torch.manual_seed(0)
    simulator = PolynomialSurface()
    theta = simulator.prior.sample((200,))
    x = simulator(theta)
    inference = sbi_mflow.ManifoldNLE(
        simulator.prior, density_estimator=sbi_mflow.manifold_likelihood_nn(spec, 2, **SMALL),
        show_progress_bars=False, tracker=NullTracker())
    estimator = inference.append_simulations(theta, x).train(max_num_epochs=1)
    path = sbi_mflow.save(estimator, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)  # plain data only
    assert payload["version"] == 3 and payload["config"]["spec"] == spec.to_dict()
    loaded = sbi_mflow.load(path)
    assert loaded.spec == spec and type(loaded.encoder) is type(estimator.encoder)
    # the same float32 weights and operations in one process: bit for bit, so the float32
    # defaults (rtol 1.3e-6, atol 1e-5) only absorb what cannot happen
    torch.testing.assert_close(loaded.log_prob(x[:8], theta[:8]),
                               estimator.log_prob(x[:8], theta[:8]))
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    again = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=lambda t, z: loaded,
                                  show_progress_bars=False, tracker=NullTracker())
    retrained = again.append_simulations(theta, x).train(max_num_epochs=1)
    assert retrained is loaded and again.summary["epochs_trained"] == [1]
    phase = again.summary["phases"][-1]
    # the simultaneous loss of plain training: reconstruction only with a density on the
    # manifold (here on a θ-dependent chart, which the M/D schedules cannot cache)
    assert phase["phase"] == ("simultaneous" if spec.density_on_manifold else "likelihood")
    assert math.isfinite(phase["validation_total"])
    assert any(not torch.equal(before[k], v) for k, v in loaded.state_dict().items())


# ------------------------------------------------------------------ manifold_dim="auto"
def test_auto_manifold_dim_is_estimated_once_on_the_first_batch(monkeypatch):
    import sbi_mflow.dimension as dimension

    calls = []
    real = dimension.estimate_manifold_dim

    def counted(x):
        calls.append(tuple(x.shape))
        return real(x)

    monkeypatch.setattr(dimension, "estimate_manifold_dim", counted)
    torch.manual_seed(0)
    x = PolynomialSurface()(torch.rand(1000, 1) * 2 - 1)
    build = sbi_mflow.manifold_likelihood_nn("mflow", "auto", **SMALL)
    estimator = build(None, x)
    # the polynomial surface is 2-dimensional (held-out errors measured 0.13 at n = 1 and
    # 1e-4 at n = 2 on the 3 kernels: the rule's 1 % tolerance lies between)
    assert estimator.manifold_dim == 2 and build.manifold_dim == 2
    assert build.dimension_estimate.manifold_dim == 2
    build(None, x)
    assert calls == [(1000, 3)]


def test_auto_manifold_dim_refuses_full_rank_data_and_says_why():
    x = torch.randn(1500, 4, generator=torch.Generator().manual_seed(0))
    build = sbi_mflow.manifold_likelihood_nn("mflow", "auto")
    with pytest.raises(ValueError, match="no manifold below d = 4.*likelihood_nn\\('nsf'\\)"):
        build(None, x)
