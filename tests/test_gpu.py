"""The whole pipeline on a CUDA device: train, save/load, posterior, demo (``-m gpu``).

Deselected by default; run on a machine with a GPU: ``pytest -m gpu``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

import sbi_mflow
from sbi_mflow.tracking import NullTracker
from simulators import PolynomialSurface

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
SMALL = dict(outer_layers=2, inner_layers=2, hidden_features=16)


@pytest.fixture(scope="module")
def trained():
    """An M-flow trained on the GPU with the simulator's CPU prior (moved for the user)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    simulator = PolynomialSurface()
    theta = simulator.prior.sample((2000,))
    x = simulator(theta)
    build = sbi_mflow.manifold_likelihood_nn("mflow", 2, **SMALL)
    inference = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=build, device="cuda",
                                      show_progress_bars=False, tracker=NullTracker())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny budget: stall and batch-size warnings
        estimator = inference.append_simulations(theta, x).train(max_num_epochs=6)
    return simulator, inference, estimator


def test_training_on_cuda_with_a_cpu_prior_keeps_everything_on_the_gpu(trained):
    _, inference, estimator = trained
    assert all(p.device.type == "cuda" for p in estimator.parameters())
    assert inference._prior.sample((1,)).device.type == "cuda"
    config = inference.summary["train_config"]
    assert config["training_batch_size"] == 1024 and config["compile"] is True
    x = torch.randn(5, 3, device=CUDA)
    theta = torch.zeros(5, 1, device=CUDA)
    log_prob = estimator.log_prob(x, theta)
    assert log_prob.device.type == "cuda" and torch.isfinite(log_prob).all()


def test_save_on_gpu_load_on_cpu_and_back(trained, tmp_path):
    _, _, estimator = trained
    path = sbi_mflow.save(estimator, tmp_path / "model.pt")
    x = torch.randn(7, 3)
    theta = torch.rand(7, 1) * 2 - 1
    on_cpu = sbi_mflow.load(path)
    on_gpu = sbi_mflow.load(path, map_location="cuda")
    with torch.no_grad():
        expected = estimator.chart_log_prob(x.to(CUDA), theta.to(CUDA)).cpu()
        # the same float32 network on two devices: different kernels, ~1e-6 relative (a few
        # ulps); rtol 1e-4 leaves ~100x, atol 1e-4 covers values that cancel to near 0
        torch.testing.assert_close(on_cpu.chart_log_prob(x, theta), expected,
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(on_gpu.chart_log_prob(x.to(CUDA), theta.to(CUDA)).cpu(),
                                   expected, rtol=1e-4, atol=1e-4)


def test_posterior_from_a_gpu_estimator_samples_in_the_prior_support(trained):
    simulator, inference, _ = trained
    x_o = simulator(simulator.default_theta.expand(10, 1))
    posterior = inference.build_posterior(num_chains=2, warmup_steps=30, thin=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = posterior.sample((60,), x=x_o.to(CUDA))
    assert samples.shape == (60, 1) and torch.isfinite(samples).all()
    assert simulator.prior.support.check(samples.cpu()).all()


def test_demo_runs_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    result = subprocess.run(
        [sys.executable, "-m", "sbi_mflow.cli", "demo", "--device", "cuda", "--simulations",
         "800", "--epochs", "4", "--density-epochs", "4", "--outer-layers", "2",
         "--inner-layers", "2", "--hidden-features", "16", "--num-samples", "40",
         "--chains", "2", "--warmup", "20", "--thin", "1", "--quiet"],
        capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "sbi-mflow-demo" / "summary.json").read_text())
    assert summary["posterior_c2st"] <= 1.0  # a range check (an accuracy), not a tolerance
