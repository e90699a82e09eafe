"""Table 2's AF row resumes from its checkpoint to the same network as an uninterrupted run."""

import argparse

import pytest
import torch

table2 = pytest.importorskip("benchmarks.paper_table2")


def _args(**changes) -> argparse.Namespace:
    settings = dict(simulations=300, epochs=3, density_epochs=None, outer_layers=1,
                    inner_layers=1, hidden_features=8, bins=4, linear_layer="permutation",
                    alignment=True, graph_layer=True, candidates=1, retries=0, batch=50,
                    manifold_lr=1e-3, scandal_weight=0.0, compile=False, generate=100,
                    posterior_samples=100, grid=20, device="cpu", af_chunk=2)
    settings.update(changes)
    return argparse.Namespace(**settings)


def test_af_resumed_from_checkpoint_equals_uninterrupted_run(tmp_path):
    """Epochs 0–3 in chunks of 2: the first call checkpoints after epochs 0–1 (the last chunk
    is not saved) and finishes. A second call, as after a kill, resumes from that checkpoint
    and trains epochs 2–3 again; with the saved RNG state it must end with the first call's
    network, parameter for parameter."""
    from simulators import PolynomialSurface

    args = _args()
    data = table2._data(PolynomialSurface(), args, seed=0)
    checkpoint = tmp_path / "af-seed0.checkpoint"
    torch.manual_seed(0)
    first, epochs, _ = table2._train_af(data, args, checkpoint)
    assert checkpoint.exists() and len(epochs) == args.epochs + 1
    torch.manual_seed(123)  # a different process: the checkpoint's RNG state must win
    resumed, _, _ = table2._train_af(data, args, checkpoint)
    for (name, a), (_, b) in zip(first.state_dict().items(), resumed.state_dict().items(),
                                 strict=True):
        # Same operations on the same inputs in the same order: bit-identical.
        assert torch.equal(a, b), name
