"""Chunked, seeded, resumable simulation (sbi_mflow.simulate) in-process and on Dask.

The Dask tests run on a LocalCluster of worker processes started here. Simulators come
from tests/sim_helpers.py: workers import them, so tests/ goes on their PYTHONPATH.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from sbi.inference import NLE
from sbi.utils import BoxUniform
from sim_helpers import DecayWithNumpyNoise, InterruptOnce, KillOnce, NoisySimulator, row_theta

import sbi_mflow
from sbi_mflow import SimulationWarning, load_simulations, simulate

distributed = pytest.importorskip("distributed")

TESTS = Path(__file__).resolve().parent
QUIET = {"progress": False}


def _local_cluster(workers: int, threads: int, processes: bool = True):
    # ":0": any free port for the scheduler's HTTP server (8787 may be taken).
    return distributed.LocalCluster(n_workers=workers, processes=processes,
                                    threads_per_worker=threads, dashboard_address=":0")


@pytest.fixture(scope="module")
def cluster():
    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    with pytest.MonkeyPatch.context() as patch:
        # Worker processes (also those restarted after a crash) start with this path.
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
        with _local_cluster(workers=2, threads=1) as local_cluster:
            yield local_cluster


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as dask_client:
        yield dask_client


def test_same_arrays_in_process_on_one_and_on_two_workers(cluster, client):
    simulator = DecayWithNumpyNoise()  # torch's and numpy's generators, and scores
    theta = simulator.prior.sample((1500,))
    options = dict(chunk_size=200, seed=3, with_score=True, **QUIET)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    here = simulate(simulator, theta, **options)
    assert torch.equal(torch.get_rng_state(), torch_state)  # the caller's streams untouched
    assert np.array_equal(np.random.get_state()[1], numpy_state)

    on_two = simulate(simulator, theta, client=client, **options)
    by_address = simulate(simulator, theta, client=cluster.scheduler_address, **options)
    # One worker with two threads, in this process: its chunks share the global generators
    # with each other and with this thread.
    with _local_cluster(workers=1, threads=2, processes=False) as one, \
            distributed.Client(one) as one_client:
        on_one = simulate(simulator, theta, client=one_client, **options)
    assert not here.failed.any()
    for other in (on_two, by_address, on_one):
        assert torch.equal(other.theta, theta)
        assert torch.equal(other.x, here.x) and torch.equal(other.score, here.score)
        assert not other.failed.any()
    # The seed matters, and every chunk draws its own numbers.
    reseeded = simulate(simulator, theta, **{**options, "seed": 4})
    assert (reseeded.x[:, -1] != here.x[:, -1]).all()
    assert not torch.equal(here.x[:200], here.x[200:400])
    assert (here.x[:200, -1] != here.x[200:400, -1]).all()


def test_killed_worker_loses_and_duplicates_no_rows(client, tmp_path):
    theta = row_theta(1200)
    marker = tmp_path / "killed"
    reference = simulate(NoisySimulator(), theta, chunk_size=200, **QUIET)
    result = simulate(KillOnce(str(marker), row=600), theta, store=tmp_path / "s.zarr",
                      client=client, chunk_size=200, **QUIET)
    assert marker.exists()  # a worker did die, on its first call for rows 600-799
    for got in (result, load_simulations(tmp_path / "s.zarr")):
        assert not got.failed.any()
        assert torch.equal(got.theta, theta) and torch.equal(got.x, reference.x)


def test_failing_chunk_is_marked_and_a_rerun_recomputes_it_only(client, tmp_path):
    theta, store, log = row_theta(1000), tmp_path / "s.zarr", tmp_path / "calls.log"
    reference = simulate(NoisySimulator(), theta, chunk_size=200, **QUIET)
    with pytest.warns(SimulationWarning, match=r"200 of 1000 simulations failed: 200 in chunks "
                                               r"that raised after 1 retries.*broke on row 400"):
        result = simulate(NoisySimulator(log=str(log), fail_row=400), theta, store=store,
                          client=client, chunk_size=200, retries=1, **QUIET)
    failed_rows = (theta[:, 0] >= 400) & (theta[:, 0] < 600)
    assert torch.equal(result.failed, failed_rows)
    assert torch.isnan(result.x[failed_rows]).all()
    assert torch.equal(result.x[~failed_rows], reference.x[~failed_rows])
    assert result.chunk_errors == {"2": "RuntimeError: simulator broke on row 400"}
    # Each chunk once, the broken one 1 + retries times.
    assert Counter(log.read_text().split()) == {"0": 1, "200": 1, "400": 2, "600": 1, "800": 1}

    log.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SimulationWarning)
        fixed = simulate(NoisySimulator(log=str(log)), theta, store=store, client=client,
                         chunk_size=200, retries=1, **QUIET)
    assert log.read_text().split() == ["400"]
    assert not fixed.failed.any() and torch.equal(fixed.x, reference.x)
    assert load_simulations(store).chunk_errors == {}


def test_interrupted_run_keeps_finished_chunks_and_resumes(tmp_path):
    theta, store, log = row_theta(600), tmp_path / "s.zarr", tmp_path / "calls.log"
    simulator = InterruptOnce(str(tmp_path / "interrupted"), row=300, log=str(log))
    with pytest.raises(KeyboardInterrupt):
        simulate(simulator, theta, store=store, chunk_size=100, **QUIET)
    partial = load_simulations(store)  # what a reader sees mid-run
    reference = simulate(NoisySimulator(), theta, chunk_size=100, **QUIET)
    assert torch.equal(partial.failed, theta[:, 0] >= 300)
    assert torch.equal(partial.x[:300], reference.x[:300])

    log.unlink()
    finished = simulate(simulator, theta, store=store, chunk_size=100, **QUIET)
    assert log.read_text().split() == ["300", "400", "500"]
    assert not finished.failed.any() and torch.equal(finished.x, reference.x)


def test_store_of_another_run_is_refused_and_left_intact(tmp_path):
    theta, store = row_theta(300), tmp_path / "s.zarr"
    simulate(NoisySimulator(), theta, store=store, chunk_size=100, seed=0, **QUIET)
    saved = load_simulations(store)
    nudged = theta.clone()
    nudged[5, 1] += 1e-3
    for other_theta, options, message in [
        (nudged, {"seed": 0}, r"differs in theta"),
        (theta, {"seed": 1}, r"differs in seed \(store: 0, given: 1\)"),
        (theta[:200], {"seed": 0}, r"differs in theta \(store: 300×2"),
        (theta, {"seed": 0, "chunk_size": 50}, r"chunk_size \(store: 100, given: 50\)"),
    ]:
        options.setdefault("chunk_size", 100)
        with pytest.raises(ValueError, match=message):
            simulate(NoisySimulator(), other_theta, store=store, **options, **QUIET)
    again = load_simulations(store)
    assert torch.equal(again.x, saved.x) and not again.failed.any()

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a Zarr group"):
        simulate(NoisySimulator(), theta, store=folder, **QUIET)
    assert [p.name for p in folder.iterdir()] == ["precious.txt"]


def test_nan_rows_are_counted_kept_as_failed_and_never_trained_on(tmp_path):
    theta, store = row_theta(500), tmp_path / "s.zarr"
    with pytest.warns(SimulationWarning, match="100 of 500 simulations failed: 100 with NaN"):
        result = simulate(NoisySimulator(nan_every=5), theta, store=store, chunk_size=100,
                          **QUIET)
    nan_rows = theta[:, 0].long() % 5 == 0
    assert torch.equal(result.failed, nan_rows)
    assert torch.isnan(result.x[nan_rows]).all()
    assert torch.equal(load_simulations(store).failed, nan_rows)  # kept in the store

    prior = BoxUniform(torch.tensor([0.0, 0.0]), torch.tensor([500.0, 1.0]))
    build = sbi_mflow.manifold_likelihood_nn("mflow", manifold_dim=1)
    for inference in (sbi_mflow.ManifoldNLE(prior, density_estimator=build), NLE(prior)):
        result.append_to(inference)
        theta_in, x_in, _ = inference.get_simulations()
        assert torch.equal(theta_in, theta[~nan_rows]) and torch.equal(x_in, result.x[~nan_rows])
    # Or all rows, and the trainer drops the invalid ones itself.
    with pytest.warns(UserWarning, match="Dropped 100 of 500"):
        result.append_to(sbi_mflow.ManifoldNLE(prior, density_estimator=build),
                         exclude_invalid_x=True)


@pytest.mark.filterwarnings("ignore:Data has extreme outliers")  # sbi's z-score note
def test_scores_reach_manifold_nle():
    simulator = DecayWithNumpyNoise()
    theta = simulator.prior.sample((300,))
    result = simulate(simulator, theta, chunk_size=100, with_score=True, **QUIET)
    build = sbi_mflow.manifold_likelihood_nn("mflow", manifold_dim=10)
    inference = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=build)
    result.append_to(inference)
    _, x_in, score_in = inference.get_simulations_with_score()
    assert torch.equal(x_in, result.x) and torch.equal(score_in, result.score)


@pytest.mark.parametrize("theta,options,message", [
    (torch.zeros(5), {}, "2-D"),
    (torch.full((4, 2), float("nan")), {}, "NaN or inf in 4 row"),
    (torch.zeros(4, 2), {"chunk_size": 0}, "chunk_size must be an integer >= 1"),
    (torch.zeros(4, 2), {"seed": -1}, "seed must be an integer >= 0"),
    (torch.zeros(4, 2), {"with_score": True}, "simulate_with_score"),
])
def test_bad_input_gets_a_clear_error(theta, options, message):
    with pytest.raises(ValueError, match=message):
        simulate(NoisySimulator(), theta, **options, **QUIET)


def test_load_simulations_of_a_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="No simulation store"):
        load_simulations(tmp_path / "nowhere.zarr")
