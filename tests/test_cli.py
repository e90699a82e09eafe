"""The command line, driven in subprocesses as a user would."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TINY_TRAINING = ["--epochs", "2", "--outer-layers", "2", "--inner-layers", "2",
                 "--hidden-features", "16", "--quiet"]
TINY_SAMPLING = ["--num-samples", "40", "--chains", "2", "--warmup", "20", "--thin", "1"]


def _command() -> list[str]:
    """The installed ``sbi-mflow`` entry point, as the README uses it (module as fallback)."""
    script = Path(sys.executable).with_name("sbi-mflow")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sbi_mflow.cli"]


def _cli(*args, cwd=None):
    return subprocess.run([*_command(), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_demo_without_out_writes_every_promised_file_to_the_default_folder(tmp_path):
    result = _cli("demo", "--simulations", "600", *TINY_TRAINING, *TINY_SAMPLING, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "sbi-mflow-demo"  # the folder the README promises
    expected = {"model.pt", "posterior.nc", "posterior_summary.txt", "summary.json",
                "run.json", "manifold.png", "posterior.png", "trace.png", "training.png"}
    assert expected <= {p.name for p in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    for key in ("posterior_mmd_squared", "posterior_c2st", "r_hat_max", "divergences"):
        assert key in summary
    assert "r_hat" in (out / "posterior_summary.txt").read_text()
    again = _cli("demo", *TINY_TRAINING, cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr


def test_train_then_infer_round_trip_on_data_files(tmp_path):
    torch.manual_seed(0)
    theta = np.random.default_rng(0).uniform(-1, 1, size=(400, 1)).astype(np.float32)
    angle = theta[:, 0] + 0.3 * np.random.default_rng(1).standard_normal(400)
    x = np.stack([np.cos(angle), np.sin(angle), 0.5 * np.cos(angle)], 1).astype(np.float32)
    np.save(tmp_path / "theta.npy", theta)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x_o.npy", x[:5])
    run = tmp_path / "run"
    result = _cli("train", "--theta", str(tmp_path / "theta.npy"), "--x", str(tmp_path / "x.npy"),
                  "--manifold-dim", "1", "--prior-low", "-1", "--prior-high", "1",
                  "--out", str(run), "--learning-rate", "2e-3", "--manifold-learning-rate",
                  "5e-3", *TINY_TRAINING)
    assert result.returncode == 0, result.stderr
    assert {"model.pt", "run.json", "training.png"} <= {p.name for p in run.iterdir()}
    record = json.loads((run / "run.json").read_text())
    assert record["prior_box"] == {"low": [-1.0], "high": [1.0]}
    assert record["train_config"]["learning_rate"] == 2e-3
    assert record["train_config"]["manifold_learning_rate"] == 5e-3
    post = tmp_path / "post"
    result = _cli("infer", "--model", str(run), "--x-o", str(tmp_path / "x_o.npy"),
                  "--out", str(post), "--quiet", *TINY_SAMPLING)
    assert result.returncode == 0, result.stderr
    assert {"posterior.nc", "posterior.png", "trace.png", "summary.json"} <= {
        p.name for p in post.iterdir()}


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--simulator", "lorenz-96", "--out", "o"], "invalid choice: 'lorenz-96'"),
        (["train", "--theta", "missing.npy", "--x", "missing.npy", "--manifold-dim", "1",
          "--out", "o"], "does not exist"),
        (["train", "--theta", "theta.npy", "--x", "x_short.npy", "--manifold-dim", "1",
          "--out", "o"], "theta has 10 rows but x has 7"),
        (["train", "--theta", "theta.npy", "--x", "x.npy", "--manifold-dim", "3",
          "--prior-low", "-1", "--prior-high", "1", "--out", "o"], "must be smaller than d = 3"),
        (["train", "--theta", "theta.npy", "--x", "x.npy", "--model", "fom", "--manifold-dim",
          "1", "--out", "o"], "--model fom needs the manifold's chart"),
        (["train", "--simulator", "polynomial-surface", "--manifold-dim", "two", "--out", "o"],
         "expected an integer n or 'auto', got 'two'"),
        (["dimension", "--x", "x.npy", "--out", "o"], "Every coordinate of x is constant"),
        (["infer", "--model", "nowhere", "--x-o", "x.npy", "--out", "o"], "No trained model"),
        (["demo", "--out", "occupied"], "not empty; pass --force"),
    ],
)
def test_bad_input_gets_a_clear_message_and_nonzero_exit(tmp_path, args, message):
    np.save(tmp_path / "theta.npy", np.zeros((10, 1), np.float32))
    np.save(tmp_path / "x.npy", np.zeros((10, 3), np.float32))
    np.save(tmp_path / "x_short.npy", np.zeros((7, 3), np.float32))
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "precious.txt").write_text("keep me")
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "occupied" / "precious.txt").read_text() == "keep me"


def test_dimension_of_data_files_then_fom_on_the_simulators_chart(tmp_path):
    from simulators import PolynomialSurface

    torch.manual_seed(0)
    np.save(tmp_path / "x.npy", PolynomialSurface()(torch.rand(1000, 1) * 2 - 1).numpy())
    result = _cli("dimension", "--x", str(tmp_path / "x.npy"), "--out", "dim", "--quiet",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "manifold dimension: 2 (d = 3" in result.stdout
    record = json.loads((tmp_path / "dim" / "dimension.json").read_text())
    assert record["manifold_dim"] == 2 and [s["manifold_dim"] for s in record["scores"]] == [1, 2]
    assert (tmp_path / "dim" / "dimension.png").stat().st_size > 0
    result = _cli("train", "--simulator", "polynomial-surface", "--model", "fom",
                  "--simulations", "400", "--out", "fom", *TINY_TRAINING, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trained fom (n=2)" in result.stdout


def test_simulate_on_local_workers_then_train_from_the_store(tmp_path, capsys):
    store = tmp_path / "sims.zarr"
    result = _cli("simulate", "--simulator", "polynomial-surface", "--num", "600",
                  "--store", str(store), "--local-workers", "2", "--chunk-size", "200",
                  "--seed", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "600 of 600 simulations of polynomial-surface" in result.stdout
    run = tmp_path / "run"
    result = _cli("train", "--store", str(store), "--out", str(run), *TINY_TRAINING)
    assert result.returncode == 0, result.stderr
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["simulator"] == "polynomial-surface"  # so `infer` rebuilds the prior
    assert recorded["param_dim"] == 1 and recorded["data_dim"] == 3
    from sbi_mflow.cli import main  # in this process: the error path needs no fresh imports

    assert main(["train", "--store", str(tmp_path / "nowhere.zarr"), "--out", str(run),
                 "--force", *TINY_TRAINING]) == 2
    assert "No simulation store" in capsys.readouterr().err
