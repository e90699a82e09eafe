"""The paper's Table 3 orderings (``benchmarks.paper_table3``) on hand-made results."""

import argparse
import json

import pytest

paper_table3 = pytest.importorskip("benchmarks.paper_table3")


def _write(folder, row: str, seed: int, log_posterior: list[float], c2st: float,
           version: str = "0.2.0.dev6") -> None:
    result = {"row": row, "seed": seed, "log_posterior": log_posterior,
              "c2st": [c2st] * len(log_posterior), "train_seconds": 1.0,
              "sample_seconds": 1.0, "machine": {}, "version": version}
    (folder / f"{row}-seed{seed}.json").write_text(json.dumps(result))


def test_an_ordering_gives_the_paired_standard_error_over_observations(tmp_path):
    """Differences 1, 2, 3 on three observations: mean +2, standard deviation 1, so the
    standard error is 1/√3 = 0.577; the rows' own spreads (0 and 1) do not enter."""
    _write(tmp_path, "mflow-scandal", 0, [1.0, 2.0, 3.0], 0.55)
    _write(tmp_path, "mflow", 0, [0.0, 0.0, 0.0], 0.70)
    text = paper_table3.table(tmp_path)
    assert ("- M-flow (SCANDAL) above M-flow: yes (2.00 against 0.00, +2.00 ± 0.58; "
            "C2ST 0.550 against 0.700).") in text
    assert "Not checked yet (a row without a current result): PIE (uncond. manifold) above AF" \
        in text


def test_seeds_are_averaged_per_observation_before_pairing(tmp_path):
    """Two seeds of NRE, [0, 2] and [2, 0] per observation: its per-observation means are
    [1, 1], so ALICES's [2, 2] is +1 on both observations, with no spread (± 0.00)."""
    _write(tmp_path, "nre", 0, [0.0, 2.0], 0.6)
    _write(tmp_path, "nre", 1, [2.0, 0.0], 0.6)
    _write(tmp_path, "alices", 0, [2.0, 2.0], 0.5)
    text = paper_table3.table(tmp_path)
    assert "ALICES (NRE-C + joint score) above NRE-C (sbi): yes (2.00 against 1.00, " \
           "+1.00 ± 0.00;" in text


def test_a_difference_within_two_standard_errors_is_unresolved(tmp_path):
    """Differences +1, −1, +3 (mean +1, standard deviation 2, standard error 2/√3 = 1.15):
    +1 is within two standard errors, so neither row is called above the other."""
    _write(tmp_path, "meflow-scandal", 0, [1.0, -1.0, 3.0], 0.6)
    _write(tmp_path, "meflow", 0, [0.0, 0.0, 0.0], 0.6)
    assert "Me-flow (SCANDAL) above Me-flow: unresolved (1.00 against 0.00, +1.00 ± 1.15;" \
        in paper_table3.table(tmp_path)


def test_a_stale_row_is_shown_apart_and_left_out_of_the_orderings(tmp_path):
    """An M-flow (SCANDAL) result of 0.2.0.dev4 (before the density phase and the mass
    matrix changed) must not enter the orderings."""
    _write(tmp_path, "mflow-scandal", 0, [5.0, 5.0], 0.5, version="0.2.0.dev4")
    _write(tmp_path, "mflow", 0, [0.0, 0.0], 0.7)
    text = paper_table3.table(tmp_path)
    assert "| M-flow (SCANDAL) (stale) | 1 |" in text
    assert "M-flow (SCANDAL) above M-flow:" not in text
    assert "Not checked yet (a row without a current result): " in text


def test_a_rerun_redoes_stale_results_and_results_of_other_settings(tmp_path):
    args = argparse.Namespace(simulations=1000, epochs=5, scandal_weight=2.0, observations=10,
                              trials=20, draws=1000, closure_samples=2000, warmup=200)
    settings = {key: getattr(args, key) for key in paper_table3.RESULT_SETTINGS}
    path = tmp_path / "mflow-seed0.json"
    for version, changes, current in (("0.2.0.dev6", {}, True), ("0.2.0.dev4", {}, False),
                                      ("0.2.0.dev6", {"trials": 1}, False)):
        path.write_text(json.dumps({"row": "mflow", "version": version,
                                    "settings": {**settings, **changes}}))
        assert paper_table3.is_current(path, args) is current
    assert not paper_table3.is_current(tmp_path / "missing.json", args)


def test_every_paper_ordering_holds_in_the_papers_own_table():
    """The orderings checked on our rows are the paper's: each (above, below) pair has the
    larger mean log posterior in the paper's Table 3 (as transcribed in ``PAPER``), and
    every row of the table but NRE (not in the paper) takes part in one."""
    log_posterior = {row: values[2] for row, values in paper_table3.PAPER.items()}
    for above, below in paper_table3.PAPER_ORDERINGS:
        assert log_posterior[above] > log_posterior[below], (above, below)
    in_orderings = {row for pair in paper_table3.PAPER_ORDERINGS for row in pair}
    assert in_orderings == set(paper_table3.ROWS) - {"nre"}


def test_the_median_over_observations_is_shown_beside_the_mean(tmp_path):
    """One observation whose posterior misses θ (log posterior −1000) sets the mean of
    [−1, −2, −1000] to −334.33; the median over the observations stays at −2.00."""
    _write(tmp_path, "mflow", 0, [-1.0, -2.0, -1000.0], 0.7)
    text = paper_table3.table(tmp_path)
    assert "| -334.33 (-1.71) | -2.00 | 0.700 |" in text
