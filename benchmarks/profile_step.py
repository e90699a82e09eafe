"""Profile one training step of each kind: manifold, density (cached encodings), simultaneous.

For the ParticleDecay M-flow of ``benchmarks/training.py`` (d = 40, n = 10, 10 outer + 5
inner couplings), at each batch size, prints and writes to JSON:

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
captured as a CUDA graph). Older sbi-mflow versions (without ``sbi_mflow.training``) are
profiled with their own loss functions, so the same script gives before/after tables.

Run: ``python -m benchmarks.profile_step [--device cuda] [--batches 128 1024 4096]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

import sbi_mflow
from benchmarks._results import machine, write_result
from simulators import ParticleDecay

SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero")


def _loss_functions(estimator):
    """name -> (parameters, loss(x, θ) -> scalar) for the three kinds of step."""
    try:
        from sbi_mflow.losses import LatentNLL, ReconstructionLoss
    except ImportError:  # sbi-mflow 0.1: losses were estimator methods
        def manifold(x, theta):
            return estimator.reconstruction_loss(x, theta).mean()

        def density(u, theta):
            return -estimator.latent_log_prob(u, theta).mean()

        manifold_parameters = list(estimator.net.outer.parameters())
        inner_parameters = list(estimator.net.inner.parameters())
    else:
        reconstruction = ReconstructionLoss(estimator.config.reconstruction_weight)

        def manifold(x, theta):
            return reconstruction.terms(estimator, x, theta)["total"].mean()

        def density(u, theta):
            return LatentNLL().terms(estimator, u, theta)["total"].mean()

        manifold_parameters = list(estimator.chart.parameters())
        inner_parameters = list(estimator.inner.parameters())

    def simultaneous(x, theta):
        return estimator.loss(x, theta).mean()

    return {
        "manifold": (manifold_parameters, manifold, "x"),
        "density": (inner_parameters, density, "u"),
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


def main() -> None:
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
    parser.add_argument("--label", default="", help="tag of the JSON file (e.g. 'before')")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    simulator = ParticleDecay()
    theta = simulator.prior.sample((5000,))
    x = simulator(theta)
    build = sbi_mflow.manifold_likelihood_nn("mflow", simulator.manifold_dim, outer_layers=10,
                                             inner_layers=5, hidden_features=args.hidden,
                                             num_bins=8)
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
    settings = {**vars(args), "version": getattr(sbi_mflow, "__version__", "?")}
    name = f"profile_step_{args.device.split(':')[0]}{'_compiled' if args.compile else ''}"
    if args.label:
        name += f"_{args.label}"
    path = write_result(name, {"settings": settings, "machine": machine(device),
                               "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
