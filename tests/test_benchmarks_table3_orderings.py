"""The paper's Table 3 orderings (``benchmarks.paper_table3``) on hand-made results."""

import json

import pytest

paper_table3 = pytest.importorskip("benchmarks.paper_table3")


def _write(folder, row: str, seed: int, log_posterior: list[float], c2st: float) -> None:
    result = {"row": row, "seed": seed, "log_posterior": log_posterior,
              "c2st": [c2st] * len(log_posterior), "train_seconds": 1.0,
              "sample_seconds": 1.0, "machine": {}}
    (folder / f"{row}-seed{seed}.json").write_text(json.dumps(result))


def test_an_ordering_gives_the_paired_standard_error_over_observations(tmp_path):
    """Differences 1, 2, 3 on three observations: mean +2, standard deviation 1, so the
    standard error is 1/√3 = 0.577; the rows' own spreads (0 and 1) do not enter."""
    _write(tmp_path, "mflow-scandal", 0, [1.0, 2.0, 3.0], 0.55)
    _write(tmp_path, "mflow", 0, [0.0, 0.0, 0.0], 0.70)
    text = paper_table3.table(tmp_path)
    assert ("- M-flow (SCANDAL) above M-flow: yes (2.00 against 0.00, +2.00 ± 0.58; "
            "C2ST 0.550 against 0.700).") in text
    assert "above AF" not in text  # an ordering with a row not run is left out


def test_seeds_are_averaged_per_observation_before_pairing(tmp_path):
    """Two seeds of NRE, [0, 2] and [2, 0] per observation: its per-observation means are
    [1, 1], so ALICES's [2, 2] is +1 on both observations, with no spread (± 0.00)."""
    _write(tmp_path, "nre", 0, [0.0, 2.0], 0.6)
    _write(tmp_path, "nre", 1, [2.0, 0.0], 0.6)
    _write(tmp_path, "alices", 0, [2.0, 2.0], 0.5)
    text = paper_table3.table(tmp_path)
    assert "ALICES (NRE-C + joint score) above NRE-C (sbi): yes (2.00 against 1.00, " \
           "+1.00 ± 0.00;" in text
