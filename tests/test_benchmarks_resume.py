"""A stopped versus-sbi run resumes from its cache: no retraining, no T sampled twice."""

from collections.abc import Callable
from types import SimpleNamespace

import numpy
import pytest
import torch

versus_sbi = pytest.importorskip("benchmarks.versus_sbi")
methods = pytest.importorskip("benchmarks.methods")
run_cache = pytest.importorskip("benchmarks.run_cache")
run_ledger = pytest.importorskip("benchmarks.run_ledger")


class Stop(BaseException):
    """Stands for the end of a session (not an ``Exception``: run_one must not record it)."""


def _toy_task():
    """Observations (B, T, 2) whose posterior draws are the reference's own distribution."""
    return SimpleNamespace(
        name="toy", trials=(1, 20),
        prior=torch.distributions.Independent(
            torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1),
        simulate=lambda theta: theta,
        observe=lambda k, trials: torch.zeros(trials, 2),
        reference=lambda k, trials, draws: torch.randn(draws, 2))


def test_a_stopped_run_resumes_from_its_model_and_finished_trials(monkeypatch, tmp_path):
    # The cached model is a copy of the closure: it logs to files, which survive the copy.
    log, stop = tmp_path / "sampled.log", tmp_path / "stop-at-20"
    stop.touch()
    trainings = []

    def toy_method(task, theta, x, seed):
        trainings.append(seed)

        def sample(num, xs):
            trials = xs.shape[1]
            if trials == 20 and stop.exists():
                stop.unlink()
                raise Stop
            with log.open("a") as file:
                file.write(f"{trials}\n")
            return torch.randn(num, xs.shape[0], 2)
        return methods.Fitted(sample, 1.5, {"epochs": 3})

    def sampled():
        return [int(line) for line in log.read_text().split()]

    monkeypatch.setitem(versus_sbi.METHODS, "toy_method", toy_method)
    task = _toy_task()
    with pytest.raises(Stop):
        versus_sbi.run_one(task, "toy_method", 10, 0, 200, cache=tmp_path / "cache")
    cached = run_cache.cache_path(tmp_path / "cache", "toy", "toy_method", 10, 0)
    assert cached.exists() and trainings == [0] and sampled() == [1]

    result = versus_sbi.run_one(task, "toy_method", 10, 0, 200, cache=tmp_path / "cache")
    assert trainings == [0]  # the model came from the cache
    assert sampled() == [1, 20]  # T = 1 was not sampled again
    assert set(result["trials"]) == {"1", "20"}
    assert result["train_seconds"] == 1.5 and result["info"] == {"epochs": 3}
    # Draws from the reference's own distribution: C2ST near 0.5 (400 points, 5 folds:
    # chance accuracy has a standard deviation of about 0.025, so 0.65 is six away).
    assert all(0.35 < score < 0.65 for t in ("1", "20") for score in result["trials"][t]["c2st"])


def _one_at_a_time_method(log, stop_before: int | None, trainings: list,
                          network_seed: Callable[[int], int] = lambda seed: seed):
    """A method whose sampler takes one observation at a time (for T > 1) and logs, for each
    call, the observation (k, from ``observe``) and the sum of its draws; it stops the
    session before observation ``stop_before`` of T = 20 once (a file marks it). Its
    ``network`` is initialised with ``network_seed(seed)``."""
    def method(task, theta, x, seed):
        trainings.append(seed)
        torch.manual_seed(network_seed(seed))
        network = torch.nn.Linear(2, 2)

        def sample(num, xs):
            ks = [int(k) for k in xs[:, 0, 0]]
            if xs.shape[1] == 20 and stop_before in ks and log.with_suffix(".stop").exists():
                log.with_suffix(".stop").unlink()
                raise Stop
            # both generators, as sbi's slice samplers use NumPy's and torch's
            draws = torch.randn(num, xs.shape[0], 2) + float(numpy.random.randn())
            with log.open("a") as file:
                file.write(f"{xs.shape[1]} {ks} {draws.sum().item()!r}\n")
            return draws
        return methods.Fitted(sample, 1.0, {}, one_observation_at_a_time=True,
                              network=network)
    return method


@pytest.mark.parametrize("cache_lost", [False, True])
def test_a_run_stopped_inside_a_trial_count_resumes_at_the_next_observation(
        monkeypatch, tmp_path, cache_lost):
    """Stopped before observation 3 of T = 20, the run resumes there: observations 1–2 are
    not sampled again and every draw is the one an unstopped run makes (the generators'
    states are kept with the draws). From the pickled cache it does not retrain; with the
    cache lost (another machine) it trains anew, finds the same parameters and goes on
    from the committed ledger."""
    task = _toy_task()
    task.observe = lambda k, trials: torch.full((trials, 2), float(k))
    trainings = []
    kept = {"cache": tmp_path / "cache", "ledger": tmp_path / "ledger"}

    stopped = tmp_path / "stopped.log"
    stopped.with_suffix(".stop").touch()
    monkeypatch.setitem(versus_sbi.METHODS, "toy_method",
                        _one_at_a_time_method(stopped, 3, trainings))
    with pytest.raises(Stop):
        versus_sbi.run_one(task, "toy_method", 10, 0, 200, **kept)
    before = stopped.read_text().splitlines()
    # T = 1 in one batched call, then observations 1 and 2 of T = 20
    assert [line.split(" [")[0] for line in before] == ["1", "20", "20"]
    if cache_lost:
        run_cache.cache_path(kept["cache"], "toy", "toy_method", 10, 0).unlink()
    resumed = versus_sbi.run_one(task, "toy_method", 10, 0, 200, **kept)
    assert trainings == ([0, 0] if cache_lost else [0])

    straight = tmp_path / "straight.log"
    monkeypatch.setitem(versus_sbi.METHODS, "toy_method",
                        _one_at_a_time_method(straight, None, trainings))
    unstopped = versus_sbi.run_one(task, "toy_method", 10, 0, 200, cache=tmp_path / "other")
    # the same generator states give bit-identical draws: the logged sums are equal
    assert stopped.read_text() == straight.read_text()
    assert [line.split(" ")[1] for line in straight.read_text().splitlines()[1:]] == [
        f"[{k}]" for k in range(1, 6)]
    assert resumed["trials"]["20"]["c2st"] == unstopped["trials"]["20"]["c2st"]


def test_a_ledger_of_other_parameters_is_not_used(monkeypatch, tmp_path):
    """A model trained anew to other parameters (other kernels, another torch) must not go
    on with draws of the first: the run starts over and samples every observation."""
    task = _toy_task()
    task.observe = lambda k, trials: torch.full((trials, 2), float(k))
    log = tmp_path / "run.log"
    log.with_suffix(".stop").touch()
    monkeypatch.setitem(versus_sbi.METHODS, "toy_method",
                        _one_at_a_time_method(log, 3, []))
    with pytest.raises(Stop):
        versus_sbi.run_one(task, "toy_method", 10, 0, 200, ledger=tmp_path / "ledger")
    monkeypatch.setitem(versus_sbi.METHODS, "toy_method",
                        _one_at_a_time_method(log, None, [], network_seed=lambda s: s + 1))
    versus_sbi.run_one(task, "toy_method", 10, 0, 200, ledger=tmp_path / "ledger")
    observations = [line.split(" ")[1] for line in log.read_text().splitlines()
                    if line.startswith("20 ")]
    assert observations == ["[1]", "[2]", "[1]", "[2]", "[3]", "[4]", "[5]"]


def test_retraining_sbi_nle_with_its_seed_gives_the_same_parameters():
    """The ledger relies on it: sbi's NLE trained twice on the same simulations with the
    same seed ends bit for bit the same (the digest hashes every float)."""
    task = _toy_task()
    torch.manual_seed(0)
    theta = task.prior.sample((200,))
    x = theta + 0.1 * torch.randn_like(theta)
    first, second = (methods.METHODS["sbi_nle"](task, theta, x, seed=3).network
                     for _ in range(2))
    digest = run_ledger.parameter_digest(first)
    assert run_ledger.parameter_digest(second) == digest
    with torch.no_grad():  # the last bit of one float changes the digest
        weight = next(first.parameters()).view(-1)
        weight[0] = torch.nextafter(weight[0], weight[0] + 1)
    assert run_ledger.parameter_digest(first) != digest


def test_a_sampler_failure_is_recorded_but_a_cache_failure_stops_the_run(monkeypatch,
                                                                         tmp_path):
    """The method's own error is that T's result; an error keeping the cache (a full disk)
    is not the method's and must not be written down as its result."""
    def failing_method(task, theta, x, seed):
        def sample(num, xs):
            if xs.shape[1] == 20:
                raise ValueError("no posterior")
            return torch.randn(num, xs.shape[0], 2)
        return methods.Fitted(sample, 1.0, {}, one_observation_at_a_time=True)

    monkeypatch.setitem(versus_sbi.METHODS, "failing_method", failing_method)
    result = versus_sbi.run_one(_toy_task(), "failing_method", 10, 0, 200,
                                cache=tmp_path / "cache")
    assert result["trials"]["20"]["error"] == "ValueError: no posterior"
    assert len(result["trials"]["1"]["c2st"]) == 5

    monkeypatch.setitem(versus_sbi.METHODS, "toy_method",
                        _one_at_a_time_method(tmp_path / "log", None, []))
    save = versus_sbi.save_unfinished

    def full_disk(path, fitted, result, progress=None):
        if progress is not None:
            raise OSError("No space left on device")
        save(path, fitted, result, progress)

    monkeypatch.setattr(versus_sbi, "save_unfinished", full_disk)
    with pytest.raises(OSError):
        versus_sbi.run_one(_toy_task(), "toy_method", 10, 0, 200, cache=tmp_path / "cache")


def test_a_cached_model_of_another_version_is_trained_anew(monkeypatch, tmp_path):
    trainings = []

    def toy_method(task, theta, x, seed):
        trainings.append(seed)
        return methods.Fitted(lambda num, xs: torch.randn(num, xs.shape[0], 2), 1.0, {})

    monkeypatch.setitem(versus_sbi.METHODS, "toy_method", toy_method)
    task = _toy_task()
    path = run_cache.cache_path(tmp_path / "cache", "toy", "toy_method", 10, 0)
    versus_sbi.save_unfinished(path, toy_method(task, None, None, 0),
                                {"trials": {"1": {"c2st": [0.9] * 5}}})
    monkeypatch.setattr(run_cache, "code_key", lambda: "0.0.0+changed")
    result = versus_sbi.run_one(task, "toy_method", 10, 0, 200, cache=tmp_path / "cache")
    assert trainings == [0, 0]  # the model another version saved was not used
    assert result["trials"]["1"]["c2st"] != [0.9] * 5


@pytest.mark.parametrize(("method", "retrained"), [("mflow", True), ("sbi_nle", False)])
def test_only_a_method_that_uses_sbi_mflow_retrains_under_another_version(
        monkeypatch, tmp_path, method, retrained):
    """The same ``methods.py`` under another sbi-mflow version: the M-flow's cached model is
    trained anew, sbi's NLE (which does not use sbi-mflow) resumes from its own."""
    trainings = []

    def toy_method(task, theta, x, seed):
        trainings.append(seed)
        return methods.Fitted(lambda num, xs: torch.randn(num, xs.shape[0], 2), 1.0, {})

    monkeypatch.setitem(versus_sbi.METHODS, method, toy_method)
    task = _toy_task()
    path = run_cache.cache_path(tmp_path / "cache", "toy", method, 10, 0)
    versus_sbi.save_unfinished(path, toy_method(task, None, None, 0),
                                {"trials": {"1": {"c2st": [0.9] * 5}}})
    digest = run_cache.code_key().rpartition("+")[2]
    monkeypatch.setattr(run_cache, "code_key", lambda: f"0.0.0.dev0+{digest}")
    result = versus_sbi.run_one(task, method, 10, 0, 200, cache=tmp_path / "cache")
    assert trainings == ([0, 0] if retrained else [0])
    assert (result["trials"]["1"]["c2st"] == [0.9] * 5) != retrained


def test_main_removes_the_cache_of_a_finished_run(monkeypatch, tmp_path):
    """After the result JSON is written, the unfinished run's cache and ledger are deleted;
    another run's stay."""
    cache, ledger = tmp_path / "cache", tmp_path / "ledger"
    mine = run_cache.cache_path(cache, "polynomial_surface", "mflow", 10_000, 0)
    other = run_cache.cache_path(cache, "polynomial_surface", "fom", 10_000, 0)
    my_ledger = run_ledger.ledger_path(ledger, "polynomial_surface", "mflow", 10_000, 0)
    other_ledger = run_ledger.ledger_path(ledger, "polynomial_surface", "fom", 10_000, 0)
    for path in (mine, other, my_ledger, other_ledger):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"model")

    def fake_run(task, method, budget, seed, draws, cache=None, ledger=None):
        return {"task": task.name, "method": method, "budget": budget, "seed": seed,
                "train_seconds": 1.0, "info": {},
                "trials": {"20": {"c2st": [0.6] * 5, "sample_seconds": 1.0}}}

    monkeypatch.setattr(versus_sbi, "run_one", fake_run)
    versus_sbi.main(["--tasks", "polynomial_surface", "--methods", "mflow", "--budgets",
                     "10000", "--seeds", "0", "--out", str(tmp_path / "out"),
                     "--cache", str(cache), "--ledger", str(ledger)])
    assert not mine.exists() and other.exists()
    assert not my_ledger.exists() and other_ledger.exists()


def test_force_discards_the_cache_of_an_unfinished_run(monkeypatch, tmp_path):
    """``--force`` redoes a run: its unfinished model and ledger are deleted before it runs
    again."""
    cache, ledger = tmp_path / "cache", tmp_path / "ledger"
    mine = run_cache.cache_path(cache, "polynomial_surface", "mflow", 10_000, 0)
    my_ledger = run_ledger.ledger_path(ledger, "polynomial_surface", "mflow", 10_000, 0)
    for path in (mine, my_ledger):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"model")
    seen = []

    def fake_run(task, method, budget, seed, draws, cache=None, ledger=None):
        seen.append(mine.exists() or my_ledger.exists())
        raise Stop

    monkeypatch.setattr(versus_sbi, "run_one", fake_run)
    with pytest.raises(Stop):
        versus_sbi.main(["--tasks", "polynomial_surface", "--methods", "mflow", "--budgets",
                         "10000", "--seeds", "0", "--out", str(tmp_path / "out"),
                         "--cache", str(cache), "--ledger", str(ledger), "--force"])
    assert seen == [False]


def test_a_dry_run_times_a_run_by_its_other_seeds_less_what_its_ledger_holds(tmp_path):
    """Seeds 0 and 2 took 100 + 20 + 300 and 140 + 40 + 500 s (train, T = 1, T = 20): seed 1
    is expected to take their mean, 550 s; with a ledger holding its T = 1 (30 s) and two
    T = 20 observations (120 s), 400 s, since a ledger resume trains again."""
    import json

    for seed, seconds in ((0, (100.0, 20.0, 300.0)), (2, (140.0, 40.0, 500.0))):
        path = versus_sbi.result_path(tmp_path, "toy", "sbi_nle", 1000, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"train_seconds": seconds[0], "trials": {
            "1": {"sample_seconds": seconds[1]}, "20": {"sample_seconds": seconds[2]}}}))
    # Another method's and another budget's runs are not this run's other seeds.
    for method, budget in (("sbi_nle_true_chart", 1000), ("sbi_nle", 10_000)):
        path = versus_sbi.result_path(tmp_path, "toy", method, budget, 0)
        path.write_text(json.dumps({"train_seconds": 9e9, "trials": {}}))
    written = run_ledger.ledger_path(tmp_path / "ledger", "toy", "sbi_nle", 1000, 1)
    # Sums of a few binary-exact seconds: exact in float64.
    assert versus_sbi.expected_seconds(tmp_path, "toy", "sbi_nle", 1000, 1, written) == (
        550.0, [0, 2])
    written.parent.mkdir(parents=True)
    written.write_text(json.dumps({"result": {"train_seconds": 7.0, "trials": {
        "1": {"sample_seconds": 30.0}}}, "progress": {"seconds": 120.0}}))
    assert versus_sbi.expected_seconds(tmp_path, "toy", "sbi_nle", 1000, 1, written) == (
        400.0, [0, 2])
    assert versus_sbi.expected_seconds(tmp_path, "toy", "sbi_nle", 1000, 0) == (
        (140.0 + 40.0 + 500.0), [2])
    assert versus_sbi.expected_seconds(tmp_path, "toy", "mflow", 1000, 1) is None
