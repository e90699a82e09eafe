"""save / load: a state dict plus a plain config, round-tripping across processes."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import perturbed_estimator

import sbi_mflow


@pytest.mark.parametrize("model", ["mflow", "meflow", "pie-conditional"])
def test_round_trip_in_a_fresh_process(model, tmp_path):
    estimator = perturbed_estimator(model, 4, 2, param_dim=2, dtype=torch.float32, scale=0.1,
                                    linear_layer="lu")
    path = sbi_mflow.save(estimator, tmp_path / "model.pt")
    x, theta = torch.randn(6, 4, dtype=torch.float64), torch.rand(6, 2, dtype=torch.float64)
    torch.save({"x": x, "theta": theta}, tmp_path / "inputs.pt")
    # The saved float32 weights are compared bit for bit; the log-likelihood is compared in
    # float64, where a different thread count or reduction order in the child process moves
    # the result by a few ulps (~1e-15 relative) instead of float32's ~1e-6.
    expected = estimator.double().log_prob(x, theta).detach()
    script = (
        "import torch, sbi_mflow;"
        f"est = sbi_mflow.load({str(path)!r});"
        f"d = torch.load({str(tmp_path / 'inputs.pt')!r}, weights_only=True);"
        "out = {'state': est.state_dict(), 'log_prob': est.double().log_prob(d['x'], "
        "d['theta']).detach()};"
        f"torch.save(out, {str(tmp_path / 'out.pt')!r})"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    child = torch.load(tmp_path / "out.pt", weights_only=True)
    saved = torch.load(path, weights_only=True)  # plain data only
    assert sbi_mflow.ModelSpec.from_dict(saved["config"]["spec"]) == sbi_mflow.PRESETS[model]
    assert child["state"].keys() == saved["state_dict"].keys()
    for key, value in saved["state_dict"].items():
        assert torch.equal(child["state"][key], value), key
    torch.testing.assert_close(child["log_prob"], expected, rtol=1e-10, atol=1e-10)


def test_load_rejects_foreign_files_and_save_keeps_existing(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a file written by sbi_mflow.save"):
        sbi_mflow.load(foreign)
    with pytest.raises(FileNotFoundError):
        sbi_mflow.load(tmp_path / "missing.pt")
    estimator = perturbed_estimator("mflow", 3, 2, dtype=torch.float32)
    with pytest.raises(FileExistsError):
        sbi_mflow.save(estimator, foreign, overwrite=False)
    assert "weights" in torch.load(foreign, weights_only=True)


@pytest.mark.parametrize("model", ["mflow", "meflow", "pie-conditional"])
def test_models_saved_by_release_0_1_still_load(model):
    """Files written by sbi-mflow 0.1 (format version 1, flat state dict) load unchanged."""
    data = Path(__file__).parent / "data"
    estimator = sbi_mflow.load(data / f"v1_{model}.pt")
    expected = torch.load(data / f"v1_{model}_expected.pt", weights_only=True)
    value = estimator.log_prob(expected["x"], expected["theta"]).detach()
    # float32, and the standardisation re-expressed as mean/std (one rounding each): PIE's
    # log N(v; 0, 0.01²) makes values of order 1e4, hence the relative tolerance. Measured
    # ≤ 11 float32 ulps (1.3e-6 relative, PIE; MKL_CBWR=COMPATIBLE, all 3 ATen kernels): the
    # old rtol 2e-6 (17 ulps) left 1.5x. 5e-6 (42 ulps) leaves ~4x; a changed formula moves
    # mflow/meflow values (|log p| ≤ 7) by far more than their 1e-4 + 3.5e-5 allowance.
    torch.testing.assert_close(value, expected["log_prob"], rtol=5e-6, atol=1e-4)


def test_newer_format_versions_are_refused_with_the_version(tmp_path):
    estimator = perturbed_estimator("mflow", 3, 2, dtype=torch.float32)
    path = sbi_mflow.save(estimator, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, path)
    with pytest.raises(ValueError, match="format version 99"):
        sbi_mflow.load(path)


def _as_version_2(path, model):
    """Rewrite a saved file in the layout of format version 2 (sbi-mflow 0.2.0.dev1-dev3):
    the model named by ``config["model"]``, no spec, no chart entry; the same state dict."""
    payload = torch.load(path, weights_only=True)
    config = dict(payload["config"])
    del config["spec"]
    payload = {"format": payload["format"], "version": 2, "config": {"model": model, **config},
               "state_dict": payload["state_dict"]}
    torch.save(payload, path)
    return payload


@pytest.mark.parametrize("model", ["mflow", "meflow", "pie-conditional"])
def test_version_2_files_load_as_the_preset_they_name(model, tmp_path):
    estimator = perturbed_estimator(model, 4, 2, param_dim=2, dtype=torch.float32, scale=0.1)
    path = sbi_mflow.save(estimator, tmp_path / "model.pt")
    _as_version_2(path, model)
    loaded = sbi_mflow.load(path)
    assert loaded.spec == sbi_mflow.PRESETS[model]
    x, theta = torch.randn(5, 4), torch.rand(5, 2)
    # the same float32 weights and operations in one process: bit for bit (the float32
    # defaults only absorb what cannot happen)
    torch.testing.assert_close(loaded.log_prob(x, theta), estimator.log_prob(x, theta))


def test_files_written_before_the_graph_layer_load_without_it(tmp_path):
    """A version-2 file from before ``graph_layer`` existed has no such key: it loads as a
    chart without the layer, with the same log-likelihood."""
    estimator = perturbed_estimator("mflow", 4, 2, scale=0.1, graph_layer=False)
    path = sbi_mflow.save(estimator, tmp_path / "model.pt")
    payload = _as_version_2(path, "mflow")
    del payload["config"]["graph_layer"]
    torch.save(payload, path)
    loaded = sbi_mflow.load(path).double()
    assert not loaded.config.graph_layer
    x, theta = torch.randn(5, 4, dtype=torch.float64), torch.rand(5, 1, dtype=torch.float64)
    # the same float64 weights and operations: equal up to reduction order (~1e-15 relative);
    # the float64 defaults (rtol 1e-7, atol 1e-7) are far above that
    torch.testing.assert_close(loaded.log_prob(x, theta), estimator.log_prob(x, theta))
