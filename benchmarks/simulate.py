"""Benchmark: chunked simulation in one process vs on a 2-worker Dask LocalCluster.

Two simulators:

* ``DampedOscillator`` (defined here), a simulator with real per-row cost: for each row
  θ = (ω, ζ) ∈ [1, 3] × [0.05, 0.5] it integrates the damped harmonic oscillator
  x'' + 2ζω x' + ω² x = 0, x(0) = 1, x'(0) = 0, with scipy's ``solve_ivp`` (RK45,
  rtol 1e-3, atol 1e-6) and returns x(t) at 10 times in [0, 5] plus N(0, 0.05²) noise from
  torch's generator: about 1 ms of CPU per row (measured and reported below), one row at
  a time, like most real simulators. Target (issue 14): a 2-worker LocalCluster runs
  2×10⁴ rows ≥ 1.6× faster than one process, on 2 idle cores.
* ``ParticleDecay`` (vectorised, with joint scores, ~3 µs per row) at 10⁶ rows, to show
  the cost per chunk: for each chunk size, wall time, rows/s and the overhead per chunk,
  (wall − ideal) / chunks, where ideal = the simulator's own time for all rows in calls of
  one chunk each (no seeding, no store) divided by the number of processes simulating. The
  simulator's own time grows at small chunks too (per-call cost of its torch operations).
  A least-squares fit over the chunk sizes splits the overhead into a fixed cost per chunk
  and a cost per row (moving and storing the data).

Every run writes to an on-disk Zarr store (as a real run would); the workers are warmed up
(imports) before timing. The cluster's results are checked to be bit-identical to the
in-process ones. Writes ``benchmarks/results/<name>.json`` (``--name``, default
``simulate``: commit, machine, load average, settings, results) and prints the ratios;
:func:`section` renders ``simulate.json`` for ``docs/benchmarks.md``. Run::

    python -m benchmarks.simulate                       # defaults: the issue's sizes
    python -m benchmarks.simulate --ode-rows 4000 --decay-rows 200000 --name simulate_quick
    python -m benchmarks.simulate --report              # print section()
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import sbi_mflow
from benchmarks._results import describe_machine, load_result, machine, markdown_table, write_result
from simulators import ParticleDecay

__all__ = ["DampedOscillator", "TARGET_SPEED_UP", "main", "oscillator_theta", "overhead_fit",
           "section"]

NAME = "simulate"
#: Speed-up of a 2-worker LocalCluster over one process the ODE simulator should reach.
TARGET_SPEED_UP = 1.6


class DampedOscillator:
    """x(t_1..t_10) + noise of x'' + 2ζω x' + ω² x = 0, one ``solve_ivp`` per row."""

    times = np.linspace(0.0, 5.0, 10)
    noise = 0.05

    @staticmethod
    def _rhs(t, y, omega, zeta):
        return [y[1], -2.0 * zeta * omega * y[1] - omega**2 * y[0]]

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        rows = []
        for omega, zeta in theta.double().numpy():
            solution = solve_ivp(self._rhs, (0.0, 5.0), [1.0, 0.0], t_eval=self.times,
                                 args=(omega, zeta), rtol=1e-3, atol=1e-6)
            rows.append(solution.y[0])
        x = torch.from_numpy(np.stack(rows))
        return (x + self.noise * torch.randn(x.shape, dtype=torch.float64)).float()


def oscillator_theta(num: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(num, 2, generator=generator)
    return torch.stack([1.0 + 2.0 * unit[:, 0], 0.05 + 0.45 * unit[:, 1]], dim=1)


def _timed_simulate(simulator, theta, store: Path, **options):
    start = time.perf_counter()
    result = sbi_mflow.simulate(simulator, theta, store=store, progress=False, **options)
    return time.perf_counter() - start, result


def _same(a, b) -> bool:
    same = torch.equal(a.x, b.x) and torch.equal(a.failed, b.failed)
    return same and (a.score is None or torch.equal(a.score, b.score))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def bench_oscillator(args, client, folder: Path) -> dict:
    simulator, theta = DampedOscillator(), oscillator_theta(args.ode_rows, args.seed)
    options = dict(chunk_size=args.ode_chunk, seed=args.seed)
    cpu_start = time.process_time()
    here_s, here = _timed_simulate(simulator, theta, folder / "ode-here.zarr", **options)
    cpu_per_row = (time.process_time() - cpu_start) / args.ode_rows
    there_s, there = _timed_simulate(simulator, theta, folder / "ode-dask.zarr", client=client,
                                     **options)
    return {"rows": args.ode_rows, "chunk_size": args.ode_chunk,
            "cpu_ms_per_row_in_process": 1e3 * cpu_per_row,
            "in_process_s": here_s, "local_cluster_s": there_s,
            "in_process_rows_per_s": args.ode_rows / here_s,
            "local_cluster_rows_per_s": args.ode_rows / there_s,
            "speed_up": here_s / there_s, "bit_identical": _same(here, there)}


def _simulator_alone(simulator, theta: torch.Tensor, block: int) -> float:
    """Seconds for ``simulate_with_score`` over all rows, ``block`` rows per call, no store."""
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        for rows in range(0, len(theta), block):
            simulator.simulate_with_score(theta[rows : rows + block])
    return time.perf_counter() - start


def bench_decay(args, client, folder: Path) -> list[dict]:
    simulator = ParticleDecay()
    torch.manual_seed(args.seed)
    theta = simulator.prior.sample((args.decay_rows,))
    results = []
    for chunk_size in args.chunk_sizes:
        chunks = -(-args.decay_rows // chunk_size)
        alone_s = _simulator_alone(simulator, theta, chunk_size)
        options = dict(chunk_size=chunk_size, seed=args.seed, with_score=True)
        here_s, here = _timed_simulate(simulator, theta, folder / f"pd-here-{chunk_size}.zarr",
                                       **options)
        there_s, there = _timed_simulate(simulator, theta, folder / f"pd-dask-{chunk_size}.zarr",
                                         client=client, **options)
        processes = min(args.workers, chunks)
        results.append({
            "rows": args.decay_rows, "chunk_size": chunk_size, "chunks": chunks,
            "simulator_alone_s": alone_s,
            "in_process_s": here_s, "local_cluster_s": there_s,
            "in_process_rows_per_s": args.decay_rows / here_s,
            "local_cluster_rows_per_s": args.decay_rows / there_s,
            "in_process_overhead_ms_per_chunk": 1e3 * (here_s - alone_s) / chunks,
            "local_cluster_overhead_ms_per_chunk":
                1e3 * (there_s - alone_s / processes) / chunks,
            "bit_identical": _same(here, there)})
    return results


def overhead_fit(decay: list[dict], mode: str, workers: int) -> dict | None:
    """Least-squares fit of the overhead as (chunks · per_chunk + rows · per_row).

    ``per_chunk``: fixed cost of a chunk (seeding, a task's round trip, one write per array);
    ``per_row``: cost that grows with the data (transfer to the client, compression, write).
    """
    if len({r["chunk_size"] for r in decay}) < 2:
        return None
    design = np.array([[r["chunks"], r["rows"]] for r in decay], dtype=float)
    overhead = np.array([r[f"{mode}_s"] - r["simulator_alone_s"]
                         / (1 if mode == "in_process" else min(workers, r["chunks"]))
                         for r in decay])
    (per_chunk, per_row), *_ = np.linalg.lstsq(design, overhead, rcond=None)
    return {"ms_per_chunk": float(1e3 * per_chunk), "us_per_row": float(1e6 * per_row)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ode-rows", type=int, default=20_000)
    parser.add_argument("--ode-chunk", type=int, default=500)
    parser.add_argument("--decay-rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=NAME,
                        help="writes benchmarks/results/NAME.json")
    parser.add_argument("--report", action="store_true", help="print section() and exit")
    args = parser.parse_args()
    if args.report:
        print(section(), end="")
        return
    torch.set_num_threads(1)
    from distributed import Client, LocalCluster

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(
            n_workers=args.workers, processes=True, threads_per_worker=1,
            dashboard_address=":0") as cluster, Client(cluster) as client:
        folder = Path(tmp)
        # Warm-up (imports on the workers), not timed.
        sbi_mflow.simulate(DampedOscillator(), oscillator_theta(8, 1), client=client,
                           chunk_size=2, progress=False)
        sbi_mflow.simulate(ParticleDecay(), ParticleDecay().prior.sample((8,)), client=client,
                           chunk_size=2, with_score=True, progress=False)
        oscillator = bench_oscillator(args, client, folder)
        decay = bench_decay(args, client, folder)
    report = {
        "benchmark": "simulate",
        "machine": {**machine(), "python": platform.python_version(),
                    "dask": _version("dask"), "distributed": _version("distributed"),
                    "zarr": _version("zarr")},
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("name", "report")},
                     "threads_per_worker": 1, "torch_threads": 1},
        "results": {"damped_oscillator": oscillator, "particle_decay": decay,
                    "particle_decay_overhead_fit": {
                        mode: overhead_fit(decay, mode, args.workers)
                        for mode in ("in_process", "local_cluster")}},
    }
    path = write_result(args.name, report)

    o = oscillator
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} CPUs)")
    print(f"DampedOscillator, {o['rows']} rows, chunks of {o['chunk_size']}: "
          f"{o['cpu_ms_per_row_in_process']:.2f} ms CPU per row; in-process "
          f"{o['in_process_s']:.1f} s, {args.workers}-worker LocalCluster "
          f"{o['local_cluster_s']:.1f} s: speed-up {o['speed_up']:.2f}x "
          f"(target >= {TARGET_SPEED_UP:g}x); "
          f"bit-identical: {o['bit_identical']}")
    print(f"ParticleDecay with scores, {args.decay_rows} rows (alone: the simulator in calls "
          "of one chunk, no store; ms/chunk: overhead per chunk; ratio: in-process / cluster)")
    print(f"  {'chunk':>7} {'chunks':>6} {'alone s':>8} {'in-proc s':>9} {'rows/s':>9} "
          f"{'ms/chunk':>8} {'cluster s':>9} {'rows/s':>9} {'ms/chunk':>8} {'ratio':>6} identical")
    for r in decay:
        print(f"  {r['chunk_size']:>7} {r['chunks']:>6} {r['simulator_alone_s']:>8.2f} "
              f"{r['in_process_s']:>9.2f} "
              f"{r['in_process_rows_per_s']:>9.0f} {r['in_process_overhead_ms_per_chunk']:>8.2f} "
              f"{r['local_cluster_s']:>9.2f} {r['local_cluster_rows_per_s']:>9.0f} "
              f"{r['local_cluster_overhead_ms_per_chunk']:>8.2f} "
              f"{r['in_process_s'] / r['local_cluster_s']:>6.2f} {r['bit_identical']}")
    for mode, fit in report["results"]["particle_decay_overhead_fit"].items():
        if fit:
            print(f"  overhead fit, {mode}: {fit['ms_per_chunk']:.2f} ms per chunk + "
                  f"{fit['us_per_row']:.2f} µs per row")
    print(f"wrote {path}")


def _count(value: float) -> str:
    """An integer with a narrow space every three digits (20 000)."""
    return f"{value:,.0f}".replace(",", "\u202f")


def _rows(value: float) -> str:
    """Rows per second to three significant digits (27 400)."""
    return _count(float(f"{value:.3g}"))


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if abs(value) < 100 else f"{value:.0f} ms"


def section() -> str:
    """Chunked simulation in one process against a Dask LocalCluster: the speed-up on a
    per-row ODE simulator, and the cost per chunk on a fast vectorised one."""
    record = load_result(NAME)
    if record is None:
        return ""
    settings, results = record.get("settings", {}), record["results"]
    workers = settings.get("workers", 2)
    threads = settings.get("threads_per_worker", 1)
    load = record.get("load_average_1_5_15_min", {})
    o = results["damped_oscillator"]
    decay = results.get("particle_decay", [])
    fit = results.get("particle_decay_overhead_fit", {})
    identical = all(r.get("bit_identical") for r in [o, *decay])
    met = "met" if o["speed_up"] >= TARGET_SPEED_UP else "not met"
    text = (
        "## Simulation on Dask (`python -m benchmarks.simulate`)\n\n"
        f"`sbi_mflow.simulate` in one process against a {workers}-worker `LocalCluster` "
        f"(processes, {threads} thread each), both writing to an on-disk Zarr store; the "
        "workers are warmed up (imports) before timing. The cluster's arrays were "
        + ("bit-identical to the in-process ones in every case"
           if identical else "NOT bit-identical to the in-process ones in every case")
        + (f". Load average (1 min) {load['before'][0]:.2f} before and "
           f"{load['after'][0]:.2f} after the run" if load else "") + ".\n\n"
        f"Per-row ODE simulator (`DampedOscillator`: one scipy `solve_ivp` RK45 integration of "
        f"a damped harmonic oscillator per row, {o['cpu_ms_per_row_in_process']:.2f} ms of CPU "
        f"per row in this run), {_count(o['rows'])} rows in chunks of "
        f"{_count(o['chunk_size'])}:\n\n"
        + markdown_table(["", "wall time", "rows/s"], [
            ["one process", f"{o['in_process_s']:.1f} s", _rows(o["in_process_rows_per_s"])],
            [f"{workers}-worker LocalCluster", f"{o['local_cluster_s']:.1f} s",
             _rows(o["local_cluster_rows_per_s"])],
            ["speed-up", f"**{o['speed_up']:.2f}×** (target ≥ {TARGET_SPEED_UP:g}×: {met})",
             ""]]))
    if decay:
        rows = [[_count(r["chunk_size"]), _count(r["chunks"]), f"{r['simulator_alone_s']:.1f} s",
                 f"{r['in_process_s']:.1f} s ({_rows(r['in_process_rows_per_s'])} rows/s)",
                 _ms(r["in_process_overhead_ms_per_chunk"]),
                 f"{r['local_cluster_s']:.1f} s ({_rows(r['local_cluster_rows_per_s'])} rows/s)",
                 _ms(r["local_cluster_overhead_ms_per_chunk"])] for r in decay]
        best = max(r["in_process_s"] / r["local_cluster_s"] for r in decay)
        text += (
            "\n\n`ParticleDecay` with joint scores (vectorised), "
            f"{_count(decay[0]['rows'])} rows. \"Alone\": the simulator called once per chunk with "
            "no seeding and no store; overhead per chunk = (wall − alone / processes "
            "simulating) / chunks. The best cluster speed-up over one process at any chunk "
            f"size was {best:.2f}×.\n\n"
            + markdown_table(["chunk size", "chunks", "alone", "one process", "overhead / chunk",
                              "LocalCluster", "overhead / chunk"], rows))
        fits = [f"{label}: {f['ms_per_chunk']:.1f} ms per chunk + {f['us_per_row']:.1f} µs "
                "per row" for label, f in (("one process", fit.get("in_process")),
                                           ("LocalCluster", fit.get("local_cluster"))) if f]
        if fits:
            text += ("\n\nLeast-squares fit of the overhead as chunks × a + rows × b (a: "
                     "seeding, a task's round trip, one write per array; b: moving, "
                     "compressing and storing the data): " + "; ".join(fits) + ".")
    info = dict(record.get("machine", {}))
    info.setdefault("torch_threads", settings.get("torch_threads"))
    return text + f"\n\nMachine: {describe_machine({'machine': info})}.\n"


if __name__ == "__main__":
    main()
