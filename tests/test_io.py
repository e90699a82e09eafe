"""save / load: a state dict plus a plain config, round-tripping across processes."""

import subprocess
import sys

import pytest
import torch
from helpers import perturbed_estimator

import sbi_mflow


@pytest.mark.parametrize("model", ["mflow", "meflow", "pie-conditional"])
def test_round_trip_in_a_fresh_process(model, tmp_path):
    estimator = perturbed_estimator(model, 4, 2, param_dim=2, dtype=torch.float32, scale=0.1,
                                    linear_layer="lu")
    path = sbi_mflow.save(estimator, tmp_path / "model.pt")
    x, theta = torch.randn(6, 4), torch.rand(6, 2)
    torch.save({"x": x, "theta": theta}, tmp_path / "inputs.pt")
    expected = estimator.log_prob(x, theta).detach()
    script = (
        "import torch, sbi_mflow;"
        f"est = sbi_mflow.load({str(path)!r});"
        f"d = torch.load({str(tmp_path / 'inputs.pt')!r}, weights_only=True);"
        f"torch.save(est.log_prob(d['x'], d['theta']).detach(), {str(tmp_path / 'out.pt')!r})"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=True), expected)
    payload = torch.load(path, weights_only=True)  # plain data only
    assert payload["config"]["model"] == model


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
