"""Profile one training step of each kind: manifold, density (cached encodings), simultaneous.

For the ParticleDecay M-flow of ``benchmarks/training.py`` (d = 40, n = 10, 10 outer + 5
inner couplings), at each batch size, prints and writes to JSON
(``benchmarks/results/profile_step_<device>[_compiled][_<label>].json``):

* wall time per step (median over ``--steps`` steps after warm-up);
* aten operators per step, and how many of them read a device value back to the host
  (``aten::_local_scalar_dense``: ``.item()``, ``bool(tensor)``) or have a data-dependent
  output shape (``aten::nonzero``, boolean-mask indexing) — each one a host
  synchronisation on a GPU;
* on CUDA: kernel launches per step;
* the share of the step's wall time not spent inside aten operators (Python, dispatch);
* the top operators by self time.

The step is the one the trainer runs (:class:`sbi_mflow.training.Phase`): loss, backward,
gradient clipping, fused AdamW. ``--compile`` profiles the ``torch.compile``d step (on CUDA
captured as a CUDA graph).

Run: ``python -m benchmarks.profile_step [--device cuda] [--batches 128 1024 4096]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

import sbi_mflow
from benchmarks._results import (
    describe_machine,
    load_result,
    machine,
    markdown_table,
    write_result,
)
from sbi_mflow.losses import LatentNLL, ReconstructionLoss
from simulators import ParticleDecay

__all__ = ["profile_kind", "section"]

SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero")
OUTER_LAYERS, INNER_LAYERS, NUM_BINS = 10, 5, 8

# results shown by section(): the CPU run here, and the runs on a lent GPU machine
CPU_RESULT = "profile_step_cpu"
GPU_RESULT = "gpu_h200/profile_step_cuda_compiled_b1024"
GPU_HOST_RESULT = "gpu_h200/profile_step_cpu_16threads"
KIND_LABELS = {"manifold": "manifold (reconstruction)", "density": "density (cached encodings)",
               "simultaneous": "simultaneous"}


def _loss_functions(estimator):
    """name -> (parameters, loss(x, θ) -> scalar) for the three kinds of step."""
    reconstruction = ReconstructionLoss(estimator.config.reconstruction_weight)

    def manifold(x, theta):
        return reconstruction.terms(estimator, x, theta)["total"].mean()

    def density(u, theta):
        return LatentNLL().terms(estimator, u, theta)["total"].mean()

    def simultaneous(x, theta):
        return estimator.loss(x, theta).mean()

    return {
        "manifold": (list(estimator.chart.parameters()), manifold, "x"),
        "density": (list(estimator.inner.parameters()), density, "u"),
        "simultaneous": (list(estimator.parameters()), simultaneous, "x"),
    }


def _optimizer(parameters):
    try:
        return torch.optim.AdamW(parameters, lr=1e-4, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(parameters, lr=1e-4)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def profile_kind(estimator, kind, data, batch, args, device):
    parameters, loss_fn, inputs = _loss_functions(estimator)[kind]
    if args.compile:
        loss_fn = torch.compile(loss_fn, mode="reduce-overhead" if device.type == "cuda"
                                else "default", dynamic=False)
    optimizer = _optimizer(parameters)
    theta, x, u = data
    source = x if inputs == "x" else u
    generator = torch.Generator(device="cpu").manual_seed(0)
    indices = [torch.randint(0, source.shape[0], (batch,), generator=generator).to(device)
               for _ in range(args.warmup + args.steps + 2)]

    graphs = args.compile and device.type == "cuda"

    def step(index):
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(source[index], theta[index])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        return loss

    estimator.train()
    started = time.perf_counter()
    for index in indices[: args.warmup]:
        step(index)
    _sync(device)
    warmup_seconds = time.perf_counter() - started
    times = []
    for index in indices[args.warmup : args.warmup + args.steps]:
        _sync(device)
        begin = time.perf_counter()
        step(index)
        _sync(device)
        times.append(time.perf_counter() - begin)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                            if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for index in indices[-2:]:
            step(index)
        _sync(device)
    events = prof.key_averages()
    aten = [e for e in events if e.key.startswith("aten::")]
    ops = sum(e.count for e in aten) / 2
    syncs = sum(e.count for e in aten if e.key in SYNC_OPS) / 2
    aten_self_cpu = sum(e.self_cpu_time_total for e in aten) / 2 / 1e6
    kernels = None
    if device.type == "cuda":
        kernels = sum(e.count for e in events
                      if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
                      and not e.key.startswith(("Memcpy", "Memset"))) / 2
    wall = statistics.median(times)
    top = sorted(aten, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    return {
        "kind": kind, "batch": batch, "step_ms": 1e3 * wall,
        "samples_per_s": batch / wall, "warmup_s": warmup_seconds,
        "aten_ops_per_step": ops, "host_syncs_per_step": syncs,
        "kernel_launches_per_step": kernels,
        "share_outside_aten_ops": max(0.0, 1.0 - aten_self_cpu / wall) if device.type == "cpu"
        else None,
        "top_ops": [(e.key, e.count / 2, e.self_cpu_time_total / 2 / 1e3) for e in top],
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[100])
    parser.add_argument("--kinds", nargs="+", default=["manifold", "density", "simultaneous"])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--label", default="", help="tag of the JSON file (e.g. 'b1024')")
    return parser


def _command(settings: dict[str, Any]) -> str:
    """The command line that reproduces a run with these settings (non-default options)."""
    options = []
    for key, default in vars(_parser().parse_args([])).items():
        value = settings.get(key, default)
        if key == "top" or value == default:
            continue
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            options.append(flag)
        elif isinstance(value, list):
            options.append(" ".join([flag, *map(str, value)]))
        else:
            options.append(f"{flag} {value}")
    return " ".join(["python -m benchmarks.profile_step", *options])


def _load(record: dict[str, Any]) -> str:
    load = record.get("machine", {}).get("load_average")
    return f"; load average {load[0]:.1f} when it ran" if load else ""


def _threads(count: int | None) -> str:
    return f"{count} torch thread{'' if count == 1 else 's'}"


def _model(settings: dict[str, Any]) -> str:
    return (f"d = {ParticleDecay.data_dim}, n = {ParticleDecay.manifold_dim}, "
            f"{settings.get('outer_layers', OUTER_LAYERS)} outer + "
            f"{settings.get('inner_layers', INNER_LAYERS)} inner couplings, hidden "
            f"{settings.get('hidden')}, {settings.get('num_bins', NUM_BINS)} bins")


def _gpu_section(gpu_record: dict[str, Any], host: dict[str, Any] | None) -> str:
    """The compiled CUDA step against the same machine's CPU, all cores."""
    settings, info = gpu_record.get("settings", {}), gpu_record.get("machine", {})
    gpu = describe_machine(gpu_record)
    rows, ratios = [], []
    host_rows = {(r["kind"], r["batch"]): r for r in (host or {}).get("rows", [])}
    how = "compiled (`torch.compile`, CUDA graph)" if settings.get("compile") else "eager"
    for r in gpu_record["rows"]:
        rows.append([f"{gpu}, {how}",
                     KIND_LABELS.get(r["kind"], r["kind"]), r["batch"], f"{r['step_ms']:.2f}",
                     f"{r['samples_per_s']:,.0f}", f"{r['host_syncs_per_step']:.0f}",
                     f"{r['kernel_launches_per_step']:,.0f}"])
        cpu = host_rows.get((r["kind"], r["batch"]))
        if cpu:
            ratios.append(f"{r['samples_per_s'] / cpu['samples_per_s']:.1f}× the CPU's samples "
                          f"per second for the {r['kind']} step at batch {r['batch']}")
    if host:
        threads = host.get("settings", {}).get("threads")
        for r in host["rows"]:
            rows.append([f"same machine's CPU, {threads} threads",
                         KIND_LABELS.get(r["kind"], r["kind"]), r["batch"], f"{r['step_ms']:.2f}",
                         f"{r['samples_per_s']:,.0f}", f"{r['host_syncs_per_step']:.0f}", ""])
    warmup = ", ".join(f"{r['warmup_s']:.0f} s" for r in gpu_record["rows"])
    text = (
        f"### On the {gpu} (`{_command(settings)}`)\n\n"
        f"The same step on a lent {gpu} (torch {info.get('torch')}, {info.get('cpu_count')} "
        f"CPU cores), {_model(settings)}, median of {settings.get('steps')} steps after "
        f"{settings.get('warmup')} warm-up steps; the warm-up, compilation included, took "
        f"{warmup}."
        + (f" The CPU rows ran on the same machine with `{_command(host['settings'])}`."
           if host else "")
        + (" The GPU gives " + "; ".join(ratios) + "." if ratios else "")
        + " JSON: `benchmarks/results/" + GPU_RESULT + ".json`"
        + (f", `benchmarks/results/{GPU_HOST_RESULT}.json`" if host else "") + ".\n\n"
        + markdown_table(["machine", "step", "batch", "ms per step", "samples/s",
                          "host syncs per step", "kernel launches per step"], rows)
        + "\n\n")
    return text + f"Machine: {gpu}{_load(gpu_record)}.\n"


def section() -> str:
    """Markdown section from ``profile_step_cpu.json`` and, when present, the GPU runs."""
    record = load_result(CPU_RESULT)
    if record is None:
        return ""
    settings = record.get("settings", {})
    rows = [[KIND_LABELS.get(r["kind"], r["kind"]), r["batch"], f"{r['step_ms']:.1f}",
             f"{r['samples_per_s']:,.0f}", f"{r['aten_ops_per_step']:,.0f}",
             f"{r['host_syncs_per_step']:.0f}",
             "" if r.get("share_outside_aten_ops") is None
             else f"{100 * r['share_outside_aten_ops']:.0f}%",
             ", ".join(f"`{name.removeprefix('aten::')}`" for name, *_ in r["top_ops"][:3])]
            for r in record["rows"]]
    text = (
        f"## One training step, profiled (`{_command(settings)}`)\n\n"
        f"The step the trainer runs (loss, backward, gradient clipping, fused AdamW) for the "
        f"ParticleDecay M-flow ({_model(settings)}), {_threads(settings.get('threads'))}, "
        f"median of {settings.get('steps')} steps after {settings.get('warmup')} "
        f"warm-up steps, then two steps under `torch.profiler`. \"Host syncs\" counts the "
        f"operators that read a value back to the host or have a data-dependent shape "
        f"(`_local_scalar_dense`, `nonzero`, `is_nonzero`): each one stalls a GPU. \"Outside "
        f"aten\" is the share of the wall time not spent inside aten operators (Python, "
        f"dispatch). The top operators are by self time.\n\n"
        + markdown_table(["step", "batch", "ms per step", "samples/s", "aten ops per step",
                          "host syncs per step", "outside aten", "top operators"], rows)
        + f"\n\nMachine: {describe_machine(record)}{_load(record)}.\n")
    gpu = load_result(GPU_RESULT)
    if gpu is not None:
        text += "\n" + _gpu_section(gpu, load_result(GPU_HOST_RESULT))
    return text


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    simulator = ParticleDecay()
    theta = simulator.prior.sample((5000,))
    x = simulator(theta)
    build = sbi_mflow.manifold_likelihood_nn("mflow", simulator.manifold_dim,
                                             outer_layers=OUTER_LAYERS,
                                             inner_layers=INNER_LAYERS,
                                             hidden_features=args.hidden, num_bins=NUM_BINS)
    estimator = build(theta, x).to(device)
    theta, x = theta.to(device), x.to(device)
    with torch.no_grad():
        u = estimator.encode(x)
    rows = []
    for batch in args.batches:
        for kind in args.kinds:
            row = profile_kind(estimator, kind, (theta, x, u), batch, args, device)
            rows.append(row)
            print(f"{kind:>12} batch {batch:>5}: {row['step_ms']:8.2f} ms/step, "
                  f"{row['samples_per_s']:9.0f} samples/s, {row['aten_ops_per_step']:6.0f} ops, "
                  f"{row['host_syncs_per_step']:4.0f} host syncs"
                  + (f", {row['kernel_launches_per_step']:5.0f} kernels"
                     if row["kernel_launches_per_step"] is not None else "")
                  + (f", {100 * row['share_outside_aten_ops']:.0f}% outside aten ops"
                     if row["share_outside_aten_ops"] is not None else ""), flush=True)
            for name, count, ms in row["top_ops"]:
                print(f"{'':>16}{name:<40} {count:6.0f} calls {ms:8.2f} ms")
    settings = {**vars(args), "outer_layers": OUTER_LAYERS, "inner_layers": INNER_LAYERS,
                "num_bins": NUM_BINS, "version": sbi_mflow.__version__}
    name = f"profile_step_{args.device.split(':')[0]}{'_compiled' if args.compile else ''}"
    if args.label:
        name += f"_{args.label}"
    path = write_result(name, {"settings": settings, "machine": machine(device),
                               "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
