"""What the rational-quadratic spline costs in a manifold training step, and what compiling
it would save.

For the ParticleDecay M-flow of ``benchmarks/training.py`` (d = 40, 10 outer couplings,
hidden 64, 8 bins, batch 100, one CPU thread), prints and writes to JSON:

* the median time of one manifold step (reconstruction loss, backward, AdamW), with the
  library's spline and with the spline replaced by a one-operation elementwise map
  y = x·e^{a} (a from the first width parameter): the difference bounds what any faster
  spline could save (issue 12);
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

import torch

import sbi_mflow
import sbi_mflow.flows.spline as spline_module
from benchmarks._results import machine, write_result
from benchmarks._timing import median_time
from sbi_mflow.losses import ReconstructionLoss
from simulators import ParticleDecay

NUM_BINS = 8


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
    build = sbi_mflow.manifold_likelihood_nn("mflow", simulator.manifold_dim, outer_layers=10,
                                             inner_layers=5, hidden_features=64,
                                             num_bins=NUM_BINS)
    estimator = build(theta, x)
    loss = ReconstructionLoss(estimator.config.reconstruction_weight)
    parameters = list(estimator.chart.parameters()) + list(estimator.encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    batch_x, batch_theta = x[:100], theta[:100]
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
    for size in (2000, 400):
        for inverse in (False, True):
            row = spline_alone(size, inverse, not args.no_compile, args.repeats)
            rows.append(row)
            print(f"spline N={size:5d} {'inverse' if inverse else 'forward'}: eager "
                  f"{row['eager_ms']:.2f} ms" + (
                      f", compiled {row['compiled_ms']:.2f} ms (compile {row['compile_s']:.0f} s)"
                      if "compiled_ms" in row else ""), flush=True)
    path = write_result("spline_cost", {"settings": vars(args), "machine": machine(),
                                        "manifold_step": step, "spline_alone": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
