"""The versus-sbi bar (``benchmarks.versus_sbi_report.verdicts``) on hand-made results."""

import json
from types import SimpleNamespace

import pytest

versus_sbi = pytest.importorskip("benchmarks.versus_sbi")
report = pytest.importorskip("benchmarks.versus_sbi_report")


def _run(method: str, seed: int, c2st: list[float], task: str = "polynomial_surface") -> dict:
    return {"task": task, "method": method, "budget": 10_000, "seed": seed,
            "train_seconds": 1.0, "version": "0.2.0.dev6",
            "trials": {"20": {"c2st": c2st, "sample_seconds": 1.0}}}


def _line(lines: list[str], task: str) -> str:
    return next(line for line in lines if line.startswith(f"- {task}:"))


def test_comparisons_use_only_the_seeds_both_methods_ran():
    """sbi's NPE ran seed 1 only: the M-flow's seed 0 (much better) must not enter its mean."""
    results = [_run("mflow", 0, [0.50] * 5), _run("mflow", 1, [0.80] * 5),
               _run("sbi_npe", 1, [0.70] * 5), _run("fom", 0, [0.52] * 5)]
    line = _line(report.verdicts(results), "polynomial_surface")
    assert "not below sbi_npe (0.800 against 0.700, seed 1)" in line
    assert "M-flow − FOM -0.0200 (met" in line  # seed 0 only: 0.50 − 0.52
    assert line.endswith("Not run yet: sbi_nle, sbi_npse. Bar: missed.")


def test_observation_excess_and_mean_gap_are_judged_against_their_targets():
    """Mean gap +0.03, at the target (met), but one observation +0.15 above FOM's (missed)."""
    results = [_run("mflow", 0, [0.65, 0.60, 0.60, 0.60, 0.60]),
               _run("fom", 0, [0.50, 0.60, 0.60, 0.60, 0.60])]
    for method in report.SBI_METHODS:
        results.append(_run(method, 0, [0.9] * 5))
    lines = report.verdicts(results)
    line = _line(lines, "polynomial_surface")
    assert "M-flow − FOM +0.0300 (met" in line  # mean 0.61 − 0.58: at the target
    assert "largest excess over FOM on one observation +0.1500 (missed" in line
    assert lines[-1].endswith("no (missed on polynomial_surface; incomplete on "
                              "lifted_gaussian_linear, lifted_slcp, particle_decay).")


def test_no_common_seed_with_fom_reports_it_as_not_run():
    results = [_run("mflow", 1, [0.6] * 5), _run("fom", 0, [0.6] * 5)]
    line = _line(report.verdicts(results), "polynomial_surface")
    assert line.endswith("Not run yet: sbi_nle, sbi_npe, sbi_npse. Run only with other "
                         "seeds: fom. Bar: incomplete.")


def test_sampler_only_row_is_reported_whatever_its_budget():
    """exact_likelihood uses no simulations (budget 0): its mean enters every budget's
    verdict, and the table shows '–' for its simulations."""
    exact = {**_run("exact_likelihood", 0, [0.55, 0.55, 0.60, 0.60, 0.70]), "budget": 0}
    results = [_run("mflow", 0, [0.6] * 5), exact]
    line = _line(report.verdicts(results), "polynomial_surface")
    assert "the sampler on the true likelihood (no estimator error) 0.600" in line
    assert "| polynomial_surface | 20 | – | exact_likelihood | 0.600 |" in report.table(
        results)


def test_a_method_that_raised_is_reported_as_giving_no_posterior():
    """sbi's NPSE raised for T = 20 on seed 0: the verdict says so (it is neither beaten
    nor missing), the table shows the error, and its other seed still counts."""
    failed = {**_run("sbi_npse", 0, []), "trials": {"20": {
        "error": "LinAlgError: linalg.eigh failed", "sample_seconds": 3.0}}}
    results = [_run("mflow", 0, [0.6] * 5), failed, _run("sbi_npse", 1, [0.9] * 5)]
    line = _line(report.verdicts(results), "polynomial_surface")
    assert "sbi_npse gave no posterior (seed 0: LinAlgError: linalg.eigh failed)" in line
    assert "sbi_npse" not in line.split("Not run yet")[-1]
    table = report.table(results)
    assert "| sbi_npse | failed in 1 of 2 seeds (LinAlgError: linalg.eigh failed) |" in table
    assert "| polynomial_surface | 20 | 10000 | sbi_npse | 0.900 | 0.900 | 1 |" in table


def test_a_method_without_simulations_runs_once_whatever_the_budgets(monkeypatch, tmp_path):
    """exact_likelihood's file has budget 0 for every budget asked: with --force and two
    budgets it must still run once per seed, not once per budget."""
    calls = []

    def fake_run(task, method, budget, seed, draws, **options):
        calls.append((task.name, method, budget, seed))
        return {"task": task.name, "method": method, "budget": budget, "seed": seed,
                "train_seconds": 0.0, "info": {},
                "trials": {"20": {"c2st": [0.5] * 5, "sample_seconds": 1.0}}}

    monkeypatch.setattr(versus_sbi, "run_one", fake_run)
    versus_sbi.main(["--tasks", "polynomial_surface", "--methods", "exact_likelihood",
                     "--budgets", "1000", "10000", "--seeds", "0", "1", "--force",
                     "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    assert calls == [("polynomial_surface", "exact_likelihood", 0, 0),
                     ("polynomial_surface", "exact_likelihood", 0, 1)]


def test_a_rerun_redoes_missing_and_stale_results_only(monkeypatch, tmp_path):
    """Seed 0's M-flow result is current, seed 1's stale (0.2.0.dev4), seed 2's missing:
    without --force a rerun makes seeds 1 and 2; --dry-run lists them and makes none."""
    calls = []

    def fake_run(task, method, budget, seed, draws, **options):
        calls.append(seed)
        return {**_run(method, seed, [0.6] * 5), "task": task.name, "info": {}}

    for seed, version in ((0, "0.2.0.dev6"), (1, "0.2.0.dev4")):
        path = report.result_path(tmp_path, "polynomial_surface", "mflow", 10_000, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**_run("mflow", seed, [0.6] * 5),
                                               "version": version}))
    monkeypatch.setattr(versus_sbi, "run_one", fake_run)
    args = ["--tasks", "polynomial_surface", "--methods", "mflow", "--budgets", "10000",
            "--seeds", "0", "1", "2", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]
    versus_sbi.main([*args, "--dry-run"])
    assert calls == []
    versus_sbi.main(args)
    assert calls == [1, 2]


def test_a_stale_mflow_run_is_shown_apart_and_left_out_of_the_bar():
    """An M-flow run of a version before the last change to the M-flow: its own row, marked
    stale, and not the M-flow the bar compares (the current one is)."""
    results = [{**_run("mflow", 0, [0.50] * 5), "version": "0.2.0.dev4"},
               _run("mflow", 0, [0.70] * 5), _run("fom", 0, [0.69] * 5)]
    for method in report.SBI_METHODS:
        results.append(_run(method, 0, [0.9] * 5))
    line = _line(report.verdicts(results), "polynomial_surface")
    assert line.startswith("- polynomial_surface: M-flow 0.700 (seed 0)")
    table = report.table(results)
    assert "| polynomial_surface | 20 | 10000 | mflow (stale) | 0.500 |" in table
    assert "| polynomial_surface | 20 | 10000 | mflow | 0.700 |" in table
    only_stale = [results[0], *results[2:]]
    assert "no M-flow run of 0.2.0.dev5 or later" in _line(report.verdicts(only_stale),
                                                          "polynomial_surface")


def test_swaps_are_reported_against_the_method_they_change_one_part_of():
    """sbi's NSF on the M-flow's chart (seed 0) against the M-flow (seed 0 only), and sbi's
    NLE on the true chart against FOM: each swap's mean beside its base's."""
    results = [_run("mflow", 0, [0.80] * 5), _run("mflow", 1, [0.60] * 5),
               _run("nsf_on_mflow_chart", 0, [0.78] * 5), _run("fom", 0, [0.70] * 5),
               _run("sbi_nle_true_chart", 0, [0.72] * 5)]
    line = _line(report.verdicts(results), "polynomial_surface")
    assert ("sbi's NSF for our inner flow on the learned chart: 0.780 against mflow's 0.800 "
            "(seed 0)") in line
    assert "on the true chart: 0.720 against fom's 0.700 (seed 0)" in line


def test_chart_table_averages_the_seeds_that_recorded_a_reconstruction_error():
    """Two M-flow seeds recorded their chart (errors 0.2 and 0.4: mean 0.3); an older run
    without the record and a stale run are left out; no record at all gives no table."""
    def charted(seed, error, version="0.2.0.dev6"):
        return {**_run("mflow", seed, [0.6] * 5), "version": version,
                "info": {"reconstruction_mean": error, "reconstruction_median": error / 2,
                         "data_rms": 7.0}}
    results = [charted(0, 0.2), charted(1, 0.4), charted(2, 9.0, version="0.2.0.dev4"),
               _run("fom", 0, [0.6] * 5)]
    table = report.chart_table(results)
    assert "| polynomial_surface | 10000 | mflow | 0.3 | 0.15 | 7 | 2 |" in table
    assert "fom" not in table
    assert report.chart_table([_run("mflow", 0, [0.6] * 5)]) == ""


def test_the_full_budget_comparisons_list_only_tasks_the_m_flow_ran_at_that_budget():
    """An M-flow and a FOM at 10⁵ on polynomial_surface (gap +0.02): a line for that task
    only; with no M-flow run at 10⁵ there is no paragraph."""
    def at_full(method, c2st, task="polynomial_surface"):
        return {**_run(method, 0, c2st, task=task), "budget": 100_000}
    results = [at_full("mflow", [0.60] * 5), at_full("fom", [0.58] * 5),
               _run("mflow", 0, [0.7] * 5, task="lifted_slcp")]
    text = report._full_budget_paragraph(results)
    assert "- polynomial_surface: M-flow 0.600 (seed 0)" in text
    assert "M-flow − FOM +0.0200 (met" in text
    assert "lifted_slcp" not in text
    assert report._full_budget_paragraph(results[2:]) == ""


def test_foms_own_seed_to_seed_difference_is_reported_beside_the_excess():
    """FOM's seeds differ by 0.25 on observation 3 (0.75 against 0.50): the same method on
    the same observation, so an M-flow excess of that size is within the seeds' noise."""
    results = [_run("mflow", 0, [0.6] * 5), _run("mflow", 1, [0.6] * 5),
               _run("fom", 0, [0.55, 0.55, 0.75, 0.55, 0.55]),
               _run("fom", 1, [0.60, 0.55, 0.50, 0.55, 0.55])]
    line = _line(report.verdicts(results), "polynomial_surface")
    assert ("FOM against itself, largest difference between two seeds on one observation "
            "0.2500 (the seeds' noise") in line


def test_npse_fallback_iid_method_is_labelled_in_the_table():
    """A run whose T = 20 posterior came from the fallback iid_method says so in its row."""
    retried = {**_run("sbi_npse", 0, [0.8] * 5),
               "info": {"iid_fallback": {"20": {"iid_method": "fnpe",
                                                "default_error": "linalg.eigh failed"}}}}
    table = report.table([retried, _run("sbi_npse", 1, [0.9] * 5)])
    assert ("| polynomial_surface | 20 | 10000 | sbi_npse (iid_method fnpe in 1 of 2 seeds) "
            "| 0.850 (0.800–0.900) |") in table


def test_npse_retries_with_fnpe_when_its_default_iid_method_raises(monkeypatch):
    """sbi_npse's sampler: the default iid_method raises LinAlgError for T = 20, so each
    observation is drawn again with iid_method="fnpe" (and later calls of T = 20 use it
    straight away), and info records T and the error."""
    import sbi.inference
    import torch

    methods = pytest.importorskip("benchmarks.methods")
    calls = []

    class Posterior:
        def sample(self, shape, x, show_progress_bars=False, iid_method=None):
            calls.append(iid_method)
            if iid_method is None and x.shape[0] > 1:
                raise torch.linalg.LinAlgError("linalg.eigh: failed to converge")
            return torch.full((*shape, 2), float(x.sum()))

    class FakeNPSE:
        summary = {"epochs_trained": [3]}

        def __init__(self, prior, show_progress_bars=False):
            pass

        def append_simulations(self, theta, x):
            return self

        def train(self):
            return None

        def build_posterior(self):
            return Posterior()

    monkeypatch.setattr(sbi.inference, "NPSE", FakeNPSE)
    task = SimpleNamespace(prior=None)
    fitted = methods.sbi_npse(task, torch.zeros(4, 2), torch.zeros(4, 3), seed=0)
    xs = torch.arange(2 * 20 * 3, dtype=torch.float32).reshape(2, 20, 3)
    samples = fitted.sample(5, xs)
    assert samples.shape == (5, 2, 2)
    # each observation's own draws, in order: x_o.sum() identifies the observation
    assert torch.equal(samples[0, :, 0], xs.sum(dim=(1, 2)))
    assert calls == [None, "fnpe", "fnpe"]
    assert fitted.info["iid_fallback"] == {
        "20": {"iid_method": "fnpe", "default_error": "linalg.eigh: failed to converge"}}
    # one observation at a time (as versus_sbi calls it): T = 20 failed before, so fnpe
    # straight away, with no second failing run of the default
    assert fitted.one_observation_at_a_time
    assert torch.equal(fitted.sample(5, xs[1:])[0, :, 0], xs[1:].sum(dim=(1, 2)))
    assert calls == [None, "fnpe", "fnpe", "fnpe"]
    assert fitted.sample(5, xs[:, :1]).shape == (5, 2, 2)  # T = 1: no fallback needed
    assert calls[4:] == [None, None]
    assert set(fitted.info["iid_fallback"]) == {"20"}


def test_on_request_swaps_run_only_when_named(monkeypatch, tmp_path):
    """The default grid leaves out ``mflow_long`` (a diagnostic swap); ``--methods`` runs it,
    and its line reports it against the M-flow."""
    calls = []

    def fake_run(task, method, budget, seed, draws, **options):
        calls.append(method)
        return {**_run(method, seed, [0.6] * 5), "task": task.name, "info": {}}

    monkeypatch.setattr(versus_sbi, "run_one", fake_run)
    args = ["--tasks", "polynomial_surface", "--budgets", "10000", "--seeds", "0",
            "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]
    versus_sbi.main(args)
    assert "mflow_long" not in calls and "mflow" in calls
    versus_sbi.main([*args, "--methods", "mflow_long"])
    assert calls[-1] == "mflow_long"
    results = [_run("mflow", 0, [0.80] * 5), _run("mflow_long", 0, [0.75] * 5)]
    assert "four times the epochs (a manifold phase of 100 instead of 25): 0.750 against " \
           "mflow's 0.800 (seed 0)" in _line(report.verdicts(results), "polynomial_surface")


def test_mflow_long_trains_the_m_flow_with_four_times_the_epoch_budget(monkeypatch):
    """``mflow_long`` is the M-flow row with ``max_num_epochs`` 4 × the default 50."""
    methods = pytest.importorskip("benchmarks.methods")
    seen = {}

    def fake_train(model, task, theta, x, seed, **training):
        seen.update(model=model, **training)
        raise RuntimeError("stop before training")

    monkeypatch.setattr(methods, "_train_manifold", fake_train)
    with pytest.raises(RuntimeError, match="stop before training"):
        methods.METHODS["mflow_long"](None, None, None, 0)
    import inspect

    import sbi_mflow

    default = inspect.signature(sbi_mflow.ManifoldNLE.train).parameters["max_num_epochs"].default
    assert seen == {"model": "mflow", "max_num_epochs": 4 * default}
