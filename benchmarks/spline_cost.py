"""What the rational-quadratic spline costs in a manifold training step, and what compiling
it would save.

For the ParticleDecay M-flow of ``benchmarks/training.py`` (d = 40, 10 outer couplings,
hidden 64, 8 bins, batch 100, one CPU thread), prints and writes to JSON:

* the median time of one manifold step (reconstruction loss, backward, AdamW), with the
  library's spline and with the spline replaced by a one-operation elementwise map
  y = x·e^{a} (a from the first width parameter): the difference bounds what any faster
  spline could save;
* the spline alone, forward and backward, at the sizes one step uses (N = 100 × 20
  transformed features) and the sampler's potential uses (N = 400), eager and compiled
  with ``torch.compile`` (Inductor, from an empty cache; compile time reported).

Run: ``python -m benchmarks.spline_cost [--steps 20] [--no-compile]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import torch

import sbi_mflow
import sbi_mflow.flows.spline as spline_module
from benchmarks._results import (
    describe_machine,
    load_result,
    machine,
    markdown_table,
    write_result,
)
from benchmarks._timing import median_time
from sbi_mflow.losses import ReconstructionLoss
from simulators import ParticleDecay

__all__ = ["elementwise_stand_in", "manifold_step_ms", "section", "spline_alone"]

NUM_BINS = 8
OUTER_LAYERS, INNER_LAYERS, HIDDEN, BATCH = 10, 5, 64, 100
STEP_SIZE = BATCH * (ParticleDecay.data_dim // 2)  # elements one coupling layer transforms
SAMPLER_SIZE = 400  # elements of the sampler's potential
RESULT = "spline_cost"


def _median_ms(function, repeats: int) -> float:
    return 1e3 * median_time(function, repeats)


def elementwise_stand_in(inputs, unnormalized_widths, unnormalized_heights,
                          unnormalized_derivatives, inverse=False, tail_bound=1.0, **_):
    """y = x·e^{±a}, log|dy/dx| = ±a: one cheap invertible map in place of the spline."""
    scale = 0.01 * unnormalized_widths[..., 0]
    sign = -1.0 if inverse else 1.0
    return inputs * torch.exp(sign * scale), sign * scale


def manifold_step_ms(steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    simulator = ParticleDecay()
    theta = simulator.prior.sample((1000,))
    x = simulator(theta)
    build = sbi_mflow.manifold_likelihood_nn("mflow", simulator.manifold_dim,
                                             outer_layers=OUTER_LAYERS,
                                             inner_layers=INNER_LAYERS, hidden_features=HIDDEN,
                                             num_bins=NUM_BINS)
    estimator = build(theta, x)
    loss = ReconstructionLoss(estimator.config.reconstruction_weight)
    parameters = list(estimator.chart.parameters()) + list(estimator.encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    batch_x, batch_theta = x[:BATCH], theta[:BATCH]
    estimator.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.terms(estimator, batch_x, batch_theta)["total"].mean().backward()
        optimizer.step()

    library = _median_ms(step, steps)
    original = spline_module.rational_quadratic_spline
    spline_module.rational_quadratic_spline = elementwise_stand_in
    try:
        stand_in = _median_ms(step, steps)
    finally:
        spline_module.rational_quadratic_spline = original
    return {"library_spline_ms": library, "elementwise_stand_in_ms": stand_in,
            "spline_share": 1.0 - stand_in / library}


def spline_alone(size: int, inverse: bool, compile_it: bool, repeats: int) -> dict:
    torch.manual_seed(size)
    inputs = (2.0 * torch.randn(size)).requires_grad_()
    widths = torch.randn(size, NUM_BINS, requires_grad=True)
    heights = torch.randn(size, NUM_BINS, requires_grad=True)
    derivatives = torch.randn(size, NUM_BINS - 1, requires_grad=True)

    def run(function) -> None:
        outputs, logabsdet = function(inputs, widths, heights, derivatives, inverse=inverse,
                                      tail_bound=3.0)
        (outputs.sum() + logabsdet.sum()).backward()

    row = {"size": size, "inverse": inverse,
           "eager_ms": _median_ms(lambda: run(spline_module.rational_quadratic_spline),
                                  repeats)}
    if compile_it:
        compiled = torch.compile(spline_module.rational_quadratic_spline, dynamic=False)
        started = time.perf_counter()
        run(compiled)
        row["compile_s"] = time.perf_counter() - started
        row["compiled_ms"] = _median_ms(lambda: run(compiled), repeats)
    return row


def _size_label(size: int, settings: dict[str, Any]) -> str:
    if size == settings.get("step_size", STEP_SIZE):
        return f"{size} (one coupling layer at batch {settings.get('batch', BATCH)})"
    if size == settings.get("sampler_size", SAMPLER_SIZE):
        return f"{size} (the sampler's potential)"
    return str(size)


def section() -> str:
    """Markdown section from ``benchmarks/results/spline_cost.json`` ("" when it is missing)."""
    record = load_result(RESULT)
    if record is None:
        return ""
    settings = record.get("settings", {})
    step = record["manifold_step"]
    library, stand_in = step["library_spline_ms"], step["elementwise_stand_in_ms"]
    outer = settings.get("outer_layers", OUTER_LAYERS)
    options = [f"--{key.replace('_', '-')} {settings[key]}" for key, default in
               (("steps", 20), ("repeats", 100)) if settings.get(key, default) != default]
    options += ["--no-compile"] if settings.get("no_compile") else []
    command = " ".join(["python -m benchmarks.spline_cost", *options])
    threads = record.get("machine", {}).get("torch_threads")
    text = (
        f"## Where the manifold step's time goes (`{command}`)\n\n"
        f"One manifold step (reconstruction loss, backward, AdamW) of the ParticleDecay M-flow "
        f"(d = {ParticleDecay.data_dim}, {outer} outer couplings, hidden "
        f"{settings.get('hidden', HIDDEN)}, {settings.get('num_bins', NUM_BINS)} bins), batch "
        f"{settings.get('batch', BATCH)}, {threads} torch thread{'' if threads == 1 else 's'}, "
        f"median of {settings.get('steps')} steps, took {library:.1f} ms with the library's "
        f"rational-quadratic spline and {stand_in:.1f} ms with the spline replaced by a "
        f"one-operation elementwise map (y = x·e^a). So {step['spline_share']:.0%} of the step "
        f"is the {2 * outer} spline evaluations ({outer} forward to encode, {outer} inverse to "
        f"decode, each with its backward pass), and no faster spline can make the step more "
        f"than {library / stand_in:.1f}× faster.\n\n")
    rows = record.get("spline_alone", [])
    compiled = [r for r in rows if "compiled_ms" in r]
    text += (
        f"The spline alone, forward and backward, median of {settings.get('repeats')} calls, "
        f"eager" + (" and compiled with `torch.compile` (Inductor, from an empty cache; the "
                    "compile time is the first call's)" if compiled else "") + ":\n\n"
        + markdown_table(
            ["N (elements), direction", "eager ms", "compiled ms", "speed-up", "compile s"],
            [[f"{_size_label(r['size'], settings)}, {'inverse' if r['inverse'] else 'forward'}",
              f"{r['eager_ms']:.2f}",
              f"{r['compiled_ms']:.2f}" if "compiled_ms" in r else "",
              f"{r['eager_ms'] / r['compiled_ms']:.2f}×" if "compiled_ms" in r else "",
              f"{r['compile_s']:.0f}" if "compile_s" in r else ""] for r in rows])
        + "\n\n")
    if compiled:
        gains = [r["eager_ms"] / r["compiled_ms"] for r in compiled]
        waits = [r["compile_s"] for r in compiled]
        text += (f"Compiling gives {min(gains):.2f}–{max(gains):.2f}× for {min(waits):.0f}–"
                 f"{max(waits):.0f} s of compilation per shape and direction.\n\n")
    load = record.get("machine", {}).get("load_average")
    return (text + f"Machine: {describe_machine(record)}"
            + (f"; load average {load[0]:.1f} when it ran" if load else "") + ".\n")


def main() -> None:
    # a fresh Inductor cache, so that the compile times are those of a first run
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="spline-cost-inductor-")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    step = manifold_step_ms(args.steps)
    print(f"manifold step: {step['library_spline_ms']:.1f} ms with the spline, "
          f"{step['elementwise_stand_in_ms']:.1f} ms with an elementwise stand-in "
          f"(spline share {100 * step['spline_share']:.0f}%)", flush=True)
    rows = []
    for size in (STEP_SIZE, SAMPLER_SIZE):
        for inverse in (False, True):
            row = spline_alone(size, inverse, not args.no_compile, args.repeats)
            rows.append(row)
            print(f"spline N={size:5d} {'inverse' if inverse else 'forward'}: eager "
                  f"{row['eager_ms']:.2f} ms" + (
                      f", compiled {row['compiled_ms']:.2f} ms (compile {row['compile_s']:.0f} s)"
                      if "compiled_ms" in row else ""), flush=True)
    settings = {**vars(args), "outer_layers": OUTER_LAYERS, "inner_layers": INNER_LAYERS,
                "hidden": HIDDEN, "num_bins": NUM_BINS, "batch": BATCH, "step_size": STEP_SIZE,
                "sampler_size": SAMPLER_SIZE, "version": sbi_mflow.__version__}
    path = write_result(RESULT, {"settings": settings, "machine": machine(),
                                        "manifold_step": step, "spline_alone": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
