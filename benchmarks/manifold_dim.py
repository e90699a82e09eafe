"""Does ``estimate_manifold_dim`` find n on the package's simulators, and how fast?

For each data set (10⁴ simulations, seed 0) — PolynomialSurface (n = 2 in R³),
ConditionalSphere, LorenzAttractor (2), ParticleDecay (10 in R⁴⁰), lifted two moons (2 in
R³²), lifted sbibm gaussian_linear (10 in R⁶⁴), and, with no manifold, the unlifted
gaussian_linear (x = θ + noise, full rank in R¹⁰), Ornstein–Uhlenbeck paths (20 points,
the first 0) and N(0, I₆₄) — once as simulated and once with Gaussian off-manifold noise
of 1 % of each coordinate's spread, runs ``sbi_mflow.estimate_manifold_dim(x)`` at its
defaults and records the chosen n, whether cross-validation confirmed it, the reason, the
fast estimate and its time, and the per-n held-out errors.

Each finished (data set, noise) is written to ``benchmarks/results/manifold_dim.json`` as
it lands, and a rerun skips those already there (``--fresh`` starts over)::

    python -m benchmarks.manifold_dim                 # all, 2 torch threads
    python -m benchmarks.manifold_dim --data poly moons32
    python -m benchmarks.manifold_dim --report        # section() of docs/benchmarks.md
    python -m benchmarks.manifold_dim --compare-fast  # MLE, TwoNN, MOM alone

``--compare-fast`` writes ``manifold_dim_fast.json``: each fast intrinsic-dimension estimator
of scikit-dimension alone on the same rows (a different measurement, not other settings of
the first); :func:`section` renders both files.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch

import sbi_mflow
from benchmarks._results import (
    RESULTS,
    describe_machine,
    git_commit,
    load_result,
    machine,
    markdown_table,
    write_result,
)
from benchmarks._sbibm import Lift
from benchmarks.tasks import two_moons, two_moons_lift
from simulators import ConditionalSphere, LorenzAttractor, ParticleDecay, PolynomialSurface

__all__ = ["DATA", "FAST_ESTIMATORS", "compare_fast", "main", "section"]

NAME = "manifold_dim"
NUM = 10_000
NOISE = 0.01


def _simulated(simulator) -> Callable[[], torch.Tensor]:
    def make() -> torch.Tensor:
        theta = simulator.prior.sample((NUM,))
        return simulator(theta)
    return make


def _gaussian_linear() -> torch.Tensor:
    """sbibm's gaussian_linear: θ ~ N(0, 0.1 I₁₀), x = θ + N(0, 0.1 I₁₀)."""
    theta = 0.1**0.5 * torch.randn(NUM, 10)
    return theta + 0.1**0.5 * torch.randn(NUM, 10)


def _ornstein_uhlenbeck() -> torch.Tensor:
    """An Ornstein–Uhlenbeck path at 20 time points from x₀ = 0 (a constant coordinate):
    x_t = x_{t−1} e^{−θ₁Δ} + θ₂ (1 − e^{−θ₁Δ}) + 0.2 ε_t, θ ~ U([0.5, 2] × [−1, 1]),
    Δ = 0.5; fresh noise at every later point, so the data are full-rank in R¹⁹."""
    theta = torch.rand(NUM, 2) * torch.tensor([1.5, 2.0]) + torch.tensor([0.5, -1.0])
    decay = torch.exp(-theta[:, 0] * 0.5)
    path = [torch.zeros(NUM)]
    for _ in range(19):
        path.append(path[-1] * decay + theta[:, 1] * (1 - decay) + 0.2 * torch.randn(NUM))
    return torch.stack(path, dim=1)


#: name → (true n, or None for no manifold; simulations).
DATA: dict[str, tuple[int | None, Callable[[], torch.Tensor]]] = {
    "polynomial-surface": (2, _simulated(PolynomialSurface())),
    "conditional-sphere": (ConditionalSphere().manifold_dim, _simulated(ConditionalSphere())),
    "lorenz": (2, lambda: LorenzAttractor().sample(NUM)),
    "particle-decay": (10, _simulated(ParticleDecay())),
    "lifted-two-moons-32": (2, lambda: two_moons_lift()(two_moons(torch.rand(NUM, 2) * 2 - 1))),
    "lifted-gaussian-linear-64": (10, lambda: Lift(10, 64, 20261128, scale=0.45)(
        _gaussian_linear().double()).float()),
    "gaussian-linear-10": (None, _gaussian_linear),
    "ornstein-uhlenbeck-20": (None, _ornstein_uhlenbeck),
    "gaussian-64": (None, lambda: torch.randn(NUM, 64)),
}


def _data(name: str, noise: float) -> torch.Tensor:
    torch.manual_seed(0)
    x = DATA[name][1]().double()
    if noise:
        generator = torch.Generator().manual_seed(1)
        x = x + noise * x.std(0, keepdim=True) * torch.randn(x.shape, generator=generator,
                                                             dtype=x.dtype)
    return x.float()


def _true(run: dict[str, Any]) -> str:
    return str(run["true_manifold_dim"]) if run["true_manifold_dim"] is not None else "none"


def _ordered(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs in the order of :data:`DATA`, then by noise (unknown data sets last)."""
    order = {name: i for i, name in enumerate(DATA)}
    return sorted(runs.values(), key=lambda r: (order.get(r["data"], len(order)), r["noise"]))


def table(runs: dict[str, dict[str, Any]]) -> str:
    """One row per (data set, noise): the fast estimate, the chosen n, the held-out error of
    the chart per candidate n, and the chart's error relative to the linear chart's at the
    first candidate."""
    rows = []
    for run in _ordered(runs):
        result = run["result"]
        errors = " ".join(f"{s['manifold_dim']}: {s['reconstruction']:.2g}"
                          for s in result["scores"])
        first = result["scores"][0] if result["scores"] else None
        ratio = (f"{first['reconstruction'] / first['linear']:.0%}"
                 if first and first.get("linear") else "–")
        chosen = result["manifold_dim"] if result["manifold_dim"] is not None else "none"
        ok = ("" if result.get("confirmed", True) or result["manifold_dim"] is None
              else " (unconfirmed)") + ("" if run["correct"] else " ✗")
        rows.append([run["data"], result["data_dim"], _true(run), f"{run['noise']:g}",
                     f"{result['fast_estimate']:.2f} ({result['fast_seconds']:.1f})",
                     f"{chosen}{ok}", errors, ratio, f"{result['seconds']:.0f}"])
    return markdown_table(["data", "d", "true n", "noise", "fast estimate (s)", "chosen n",
                           "held-out error per n", "chart ÷ linear (first n)", "total s"],
                          rows)


#: Intrinsic-dimension estimators of scikit-dimension compared as the fast estimate.
FAST_ESTIMATORS = {
    "MLE (k=20)": lambda skdim: (skdim.id.MLE(), {"n_neighbors": 20}),
    "TwoNN": lambda skdim: (skdim.id.TwoNN(), {}),
    "MOM (k=20)": lambda skdim: (skdim.id.MOM(), {"n_neighbors": 20}),
}


def compare_fast(names: list[str], noises: list[float]) -> dict[str, dict]:
    """Each of :data:`FAST_ESTIMATORS` on each data set (the rows ``estimate_manifold_dim``
    uses: distinct, standardised, constant coordinates dropped): estimate and seconds."""
    from sbi_mflow.dimension.fast import _skdim, prepare_rows

    skdim = _skdim()
    out = {}
    for name in names:
        for noise in noises:
            rows = prepare_rows(_data(name, noise).double().numpy(), NUM, seed=0)
            for label, make in FAST_ESTIMATORS.items():
                estimator, options = make(skdim)
                started = time.perf_counter()
                estimator.fit(rows, **options)
                out[f"{name}/noise={noise:g}/{label}"] = {
                    "data": name, "noise": noise, "estimator": label,
                    "true_manifold_dim": DATA[name][0], "data_dim": rows.shape[1],
                    "estimate": float(estimator.dimension_),
                    "seconds": time.perf_counter() - started}
                print(f"{name} noise={noise:g} {label}: {estimator.dimension_:.2f}", flush=True)
    return out


def fast_table(runs: dict[str, dict[str, Any]]) -> str:
    """One row per (data set, noise), one column per estimator: estimate (seconds)."""
    labels = list(dict.fromkeys(run["estimator"] for run in runs.values()))
    found: dict[tuple, dict[str, dict[str, Any]]] = {}
    for run in _ordered(runs):
        found.setdefault((run["data"], run["noise"], _true(run)), {})[run["estimator"]] = run
    rows = [[data, true, f"{noise:g}"]
            + [f"{cells[x]['estimate']:.2f} ({cells[x]['seconds']:.1f})" if x in cells else "–"
               for x in labels]
            for (data, noise, true), cells in found.items()]
    return markdown_table(["data", "true n", "noise", *(f"{x} (s)" for x in labels)], rows)


def _span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return f"{low:{fmt}}" if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{low:{fmt}}–{high:{fmt}}"


def section() -> str:
    """``estimate_manifold_dim`` at its defaults on each data set (``manifold_dim.json``), and
    the fast estimators alone (``manifold_dim_fast.json``)."""
    record, fast = load_result(NAME), load_result(f"{NAME}_fast")
    if record is None and fast is None:
        return ""
    parts = ["## The manifold's dimension (`python -m benchmarks.manifold_dim`)"]
    if record is not None:
        runs = record["runs"]
        sizes = sorted({run["num_simulations"] for run in runs.values()})
        noises = sorted({run["noise"] for run in runs.values() if run["noise"]})
        correct = sum(run["correct"] for run in runs.values())
        found = [r for r in runs.values() if r["result"]["manifold_dim"] is not None]
        unconfirmed = sum(not r["result"].get("confirmed", True) for r in found)
        floors = sorted({r["result"]["max_unexplained"] for r in runs.values()
                         if "max_unexplained" in r["result"]})
        parts.append(
            f"`sbi_mflow.estimate_manifold_dim(x)` at its defaults (`DimensionSearchConfig`) "
            f"on {' and '.join(f'{n:,}' for n in sizes)} simulations of each data set, as "
            f"simulated and with Gaussian noise of "
            f"{' and '.join(f'{v:g}' for v in noises)} × each coordinate's standard deviation "
            "added (\"noise\"). d is the dimension of the data's linear span after constant "
            "coordinates are dropped; \"fast estimate\" is the intrinsic-dimension estimate "
            "that sets the candidate n (its seconds in brackets); \"held-out error per n\" is "
            "the mean squared error per standardised coordinate of the M-flow chart trained "
            "for that n in a short manifold phase, and \"chart ÷ linear\" the first candidate's "
            "error relative to the best linear chart's of the same n. \"Unconfirmed\" means "
            "the chart beat the linear one but no candidate reached the noise floor (held-out "
            f"error {' or '.join(f'{v:g}' for v in floors)}); ✗ marks a wrong n.\n\n"
            f"The true n (or \"no manifold\" where there is none) was chosen in {correct} of "
            f"{len(runs)} runs; {unconfirmed} of the {len(found)} that chose a manifold are "
            "unconfirmed.\n\n" + table(runs) + f"\n\nMachine: {describe_machine(record)}.")
    if fast is not None:
        runs = fast["runs"]
        labels = list(dict.fromkeys(run["estimator"] for run in runs.values()))
        worst = {x: max(abs(r["estimate"] - r["true_manifold_dim"]) for r in runs.values()
                        if r["estimator"] == x and r["true_manifold_dim"] is not None)
                 for x in labels}
        seconds = {x: [r["seconds"] for r in runs.values() if r["estimator"] == x]
                   for x in labels}
        parts.append(
            "### The fast estimate (`python -m benchmarks.manifold_dim --compare-fast`)\n\n"
            "scikit-dimension's estimators alone on the rows `estimate_manifold_dim` uses "
            "(distinct, standardised, constant coordinates dropped): estimate (seconds). "
            "Largest |estimate − true n| on the data sets with a manifold: "
            + "; ".join(f"{x} {worst[x]:.2f}" for x in labels) + ". Seconds per data set: "
            + "; ".join(f"{x} {_span(seconds[x], '.1f')}" for x in labels) + ".\n\n"
            + fast_table(runs) + f"\n\nMachine: {describe_machine(fast)}.")
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--noise", nargs="+", type=float, default=[0.0, NOISE])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--report", action="store_true",
                        help="print section() from the JSON files")
    parser.add_argument("--compare-fast", action="store_true",
                        help="only the fast estimators, into manifold_dim_fast.json")
    args = parser.parse_args()
    if args.report:
        print(section(), end="")
        return
    if args.compare_fast:
        torch.set_num_threads(args.threads)
        write_result(f"{NAME}_fast", {"machine": machine(), "note": "fast estimators",
                                      "runs": compare_fast(args.data, args.noise)})
        return
    path = RESULTS / f"{NAME}.json"
    runs = {} if args.fresh or not path.exists() else json.loads(path.read_text())["runs"]
    torch.set_num_threads(args.threads)
    for name in args.data:
        for noise in args.noise:
            key = f"{name}/noise={noise:g}"
            if key in runs:
                continue
            x = _data(name, noise)
            started = time.perf_counter()
            result = sbi_mflow.estimate_manifold_dim(x, show_progress_bars=False)
            true = DATA[name][0]
            runs[key] = {"data": name, "noise": noise, "num_simulations": NUM,
                         "true_manifold_dim": true, "correct": result.manifold_dim == true,
                         "commit": git_commit(), "result": result.to_dict(),
                         "wall_seconds": time.perf_counter() - started}
            print(f"{key}: chosen {result.manifold_dim} (true {true}); "
                  f"{result.seconds:.0f} s\n{result}", flush=True)
            write_result(NAME, {"machine": machine(), "note": __doc__.splitlines()[0],
                                "runs": runs})


if __name__ == "__main__":
    main()
