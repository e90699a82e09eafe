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
    python -m benchmarks.manifold_dim --report        # the table in docs/results.md
    python -m benchmarks.manifold_dim --compare-fast [--report]   # MLE, TwoNN, MOM alone
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

import sbi_mflow
from benchmarks._results import RESULTS, git_commit, machine, write_result
from benchmarks._sbibm import Lift
from benchmarks.tasks import two_moons, two_moons_lift
from simulators import ConditionalSphere, LorenzAttractor, ParticleDecay, PolynomialSurface

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


def report(runs: dict[str, dict]) -> str:
    lines = ["| data | d | true n | noise | fast estimate (s) | chosen n | held-out error per n | "
             "total s |", "|---|---|---|---|---|---|---|---|"]
    for run in runs.values():
        result = run["result"]
        errors = " ".join(f"{s['manifold_dim']}: {s['reconstruction']:.2g}"
                          for s in result["scores"])
        chosen = result["manifold_dim"] if result["manifold_dim"] is not None else "none"
        ok = ("" if result.get("confirmed", True) or result["manifold_dim"] is None
              else " (unconfirmed)") + ("" if run["correct"] else " ✗")
        true = run["true_manifold_dim"] if run["true_manifold_dim"] is not None else "none"
        lines.append(f"| {run['data']} | {result['data_dim']} | {true} | {run['noise']:g} | "
                     f"{result['fast_estimate']:.2f} ({result['fast_seconds']:.1f}) | "
                     f"{chosen}{ok} | {errors} | {result['seconds']:.0f} |")
    return "\n".join(lines)


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


def report_fast(runs: dict[str, dict]) -> str:
    labels = list(dict.fromkeys(run["estimator"] for run in runs.values()))
    lines = ["| data | true n | noise | " + " | ".join(f"{x} (s)" for x in labels) + " |",
             "|---|---|---|" + "---|" * len(labels)]
    rows: dict[tuple, dict] = {}
    for run in runs.values():
        rows.setdefault((run["data"], run["noise"], run["true_manifold_dim"]), {})[
            run["estimator"]] = run
    for (data, noise, true), found in rows.items():
        cells = " | ".join(f"{found[x]['estimate']:.2f} ({found[x]['seconds']:.1f})"
                           for x in labels)
        lines.append(f"| {data} | {true if true is not None else 'none'} | {noise:g} | "
                     f"{cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--noise", nargs="+", type=float, default=[0.0, NOISE])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--report", action="store_true", help="Markdown from the JSON file")
    parser.add_argument("--compare-fast", action="store_true",
                        help="only the fast estimators, into manifold_dim_fast.json")
    args = parser.parse_args()
    if args.compare_fast:
        fast_path = RESULTS / f"{NAME}_fast.json"
        if args.report:
            print(report_fast(json.loads(fast_path.read_text())["runs"]))
            return
        torch.set_num_threads(args.threads)
        write_result(f"{NAME}_fast", {"machine": machine(), "note": "fast estimators",
                                      "runs": compare_fast(args.data, args.noise)})
        return
    path = RESULTS / f"{NAME}.json"
    runs = {} if args.fresh or not path.exists() else json.loads(path.read_text())["runs"]
    if args.report:
        print(report(runs))
        return
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
