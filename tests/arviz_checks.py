"""ArviZ checks that need numpy and arviz only: run them under arviz 0.2x and arviz ≥ 1.

The modules under test (``sbi_mflow/sampling/arviz_data.py`` and ``convergence.py``) import
neither torch nor the rest of the package, so they are loaded from their files: this script
runs in an environment with arviz 1.x (Python ≥ 3.12) and no torch::

    python tests/arviz_checks.py          # prints the arviz version and "all passed"

``tests/test_arviz_data.py`` runs the same checks under pytest with the installed arviz.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

SAMPLING = Path(__file__).resolve().parents[1] / "sbi_mflow" / "sampling"


def load(name: str):
    """Load ``sbi_mflow/sampling/<name>.py`` without importing the package (no torch)."""
    spec = importlib.util.spec_from_file_location(f"_arviz_checks_{name}", SAMPLING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


arviz_data = load("arviz_data")
convergence = load("convergence")


def _chains(rng, num_chains=4, num_draws=500, shift=None):
    draws = rng.normal(size=(num_chains, num_draws, 2)) * np.array([1.0, 0.1])
    if shift is not None:
        draws[: len(shift)] += np.asarray(shift)[:, None, :]
    stats = {
        "diverging": np.zeros((num_chains, num_draws), dtype=bool),
        "lp": -0.5 * (draws**2).sum(-1),
        "energy": rng.chisquare(2, size=(num_chains, num_draws)),
    }
    return draws, stats


def check_round_trip_and_summary() -> None:
    """netCDF round trip keeps groups, values, dtypes and attributes; summary has R-hat/ESS."""
    import arviz as az

    rng = np.random.default_rng(0)
    draws, stats = _chains(rng)
    stats["diverging"][1, 7] = True
    x_o = rng.normal(size=(5, 3))
    data = arviz_data.to_inference_data(draws, stats, x_o=x_o, param_names=["a", "b"],
                                        attrs={"sampler": "pyro nuts", "warmup_steps": 10})
    assert arviz_data.group_names(data) == {"posterior", "sample_stats", "observed_data"}
    theta = data.posterior["theta"]
    assert theta.dims == ("chain", "draw", "theta_dim") and theta.shape == (4, 500, 2)
    assert list(theta["theta_dim"].values) == ["a", "b"]
    assert data.sample_stats["diverging"].dtype == bool
    assert data.observed_data["x_o"].dims == ("trial", "x_dim")
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "posterior.nc")
        data.to_netcdf(path)
        loaded = arviz_data.load_netcdf(path)
        assert arviz_data.group_names(loaded) == {"posterior", "sample_stats", "observed_data"}
        np.testing.assert_array_equal(loaded.posterior["theta"].values, draws)
        for name in stats:
            np.testing.assert_array_equal(loaded.sample_stats[name].values, stats[name])
        np.testing.assert_array_equal(loaded.observed_data["x_o"].values, x_o)
        assert loaded.posterior.attrs["sampler"] == "pyro nuts"
        assert int(loaded.sample_stats["diverging"].values.sum()) == 1
    summary = az.summary(data)
    assert {"r_hat", "ess_bulk"} <= set(summary.columns)
    assert list(summary.index) == ["theta[a]", "theta[b]"]
    rhat = float(np.max(az.rhat(data, var_names=["theta"])["theta"].values))
    ess = az.ess(data, var_names=["theta"], method="bulk")["theta"].values
    # summary rounds to 2 decimals: off by ≤ 0.005, so 0.01 is 2x the rounding error
    assert abs(float(summary["r_hat"].max()) - rhat) < 0.01
    # iid draws, 4 × 500: over 200 seeds R-hat = 1.001 ± 0.001 and ESS = 1900 ± 110 (here
    # 1.001 and 1710): both bounds are > 6 sd away; float64 rounding moves them by ~1e-15
    assert rhat < 1.01 and (ess > 1000).all()


def check_bad_input() -> None:
    rng = np.random.default_rng(1)
    draws, stats = _chains(rng)
    for call, message in [
        (lambda: arviz_data.to_inference_data(draws[0]), "num_chains, num_draws, p"),
        (lambda: arviz_data.to_inference_data(draws, param_names=["a"]), "distinct names"),
        (lambda: arviz_data.to_inference_data(draws, {"lp": stats["lp"][:, :3]}), "lp"),
    ]:
        try:
            call()
        except ValueError as error:
            assert message in str(error), error
        else:
            raise AssertionError(f"no ValueError for {message}")


def check_convergence_warnings() -> None:
    """Warnings fire for bad chains only; chains in two modes get the mode warning."""
    rng = np.random.default_rng(2)
    good, stats = _chains(rng, num_draws=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", convergence.ConvergenceWarning)
        summary = convergence.check_convergence(arviz_data.to_inference_data(good, stats))
    # iid, 4 × 1000 (200 seeds): R-hat 1.0006 ± 0.0005, ESS 3850 ± 160, B/W ≈ 1/1000 ± 0.0008
    # (here 1.0009, 3930, 0.003): every bound is > 10 sd away
    assert summary.max_rhat < 1.01 and summary.min_ess_bulk > 2000
    assert summary.between_within < 0.05 and summary.num_divergences == 0

    def caught(draws, statistics):
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            result = convergence.check_convergence(arviz_data.to_inference_data(draws, statistics))
        return result, [(r.category, str(r.message)) for r in records]

    # two chains sit 5 within-sds away on the second component: a second mode. B/W is
    # 0.0833/0.01 ≈ 8.3 by construction (here 8.5), R-hat 1.73: far from both bounds
    two_modes = good + np.array([[0, 0], [0, 0.5], [0, 0], [0, 0.5]])[:, None, :]
    result, records = caught(two_modes, stats)
    assert result.between_within > 5 and result.max_rhat > 1.5
    modes = [m for c, m in records if c is convergence.ModeDisagreementWarning]
    assert len(modes) == 1 and "theta_1" in modes[0] and "num_chains" in modes[0]
    assert not any(m.startswith("R-hat") for _, m in records)  # said once, with its fix
    # a slight shift is an R-hat problem, not a mode problem: by construction B/W ≈ 0.0625
    # (200 seeds: 0.064 ± 0.009, min 0.040; here 0.040) and R-hat 1.027 ± 0.004 (here 1.017)
    result, records = caught(good + np.array([[0.5, 0], [0, 0], [0, 0], [0, 0]])[:, None, :], stats)
    assert 0.02 < result.between_within < 1.0 and result.max_rhat > 1.01
    assert [c for c, _ in records] == [convergence.ConvergenceWarning]
    assert "R-hat" in records[0][1]
    sticky = np.cumsum(rng.normal(size=(4, 1000, 2)) * 0.05, axis=1) * 0.01 + good * 1e-4
    _, records = caught(sticky, stats)
    assert any("Bulk ESS" in message for _, message in records)
    diverging = dict(stats, diverging=stats["diverging"].copy())
    diverging["diverging"][0, 5] = diverging["diverging"][3, 9] = True
    result, records = caught(good, diverging)
    assert result.num_divergences == 2
    assert [m for _, m in records] == ["2 of 4000 transitions diverged: the sampler may be "
                                      "biased in regions of high curvature; raise "
                                      "target_accept_prob or reparametrise."]


def check_between_within_ratio() -> None:
    """B/W against its definition on a small hand-made example."""
    draws = np.array([[[0.0], [2.0]], [[4.0], [6.0]]])  # chain means 1, 5; within-var 2
    # small integers and halves: every step is exact in float64 (default rtol 1e-7 is slack)
    np.testing.assert_allclose(convergence.between_within_ratio(draws), [8.0 / 2.0])
    assert np.isnan(convergence.between_within_ratio(draws[:1])).all()


CHECKS = [check_round_trip_and_summary, check_bad_input, check_convergence_warnings,
          check_between_within_ratio]


if __name__ == "__main__":
    import arviz

    print(f"python {sys.version.split()[0]}, arviz {arviz.__version__}, torch imported: "
          f"{'torch' in sys.modules}")
    for check in CHECKS:
        check()
        print(f"{check.__name__}: passed")
    assert "torch" not in sys.modules
    print("all passed")
