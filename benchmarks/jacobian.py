"""Cost of the exact M-flow log-likelihood (with −½ log det JᵀJ) over the chart value.

Setup of issue 2: batch 256, d = 40, n = 14, 20 outer coupling layers. Prints, as ratios
to the chart log-likelihood (one encoder pass + inner flow):

* our exact ``log_prob`` (one batched forward-/reverse-mode Jacobian pass), target ≤ 2n;
* a per-element autograd loop like the paper's reference code: one
  ``torch.autograd.grad`` call per output element (B·d calls, each through the whole
  batch). That loop is measured on a sub-batch and scaled linearly in B (a lower bound:
  each call also gets slower as the batch grows; the reference even loops per layer).

Run: ``python -m benchmarks.jacobian [--batch 256] [--loop-batch 8]``.
"""

from __future__ import annotations

import argparse

import torch

import sbi_mflow
from benchmarks._timing import best_time


def per_element_log_det(estimator, u: torch.Tensor) -> torch.Tensor:
    """log det JᵀJ with one autograd call per output element, as the reference code does."""
    u = u.detach().requires_grad_(True)
    x = estimator.decode(u)
    batch, data_dim = x.shape
    rows = torch.zeros(batch, data_dim, u.shape[1])
    for b in range(batch):
        for i in range(data_dim):
            (grad,) = torch.autograd.grad(x[b, i], u, retain_graph=True)
            rows[b, i] = grad[b]
    return torch.logdet(rows.mT @ rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--data-dim", type=int, default=40)
    parser.add_argument("--manifold-dim", type=int, default=14)
    parser.add_argument("--outer-layers", type=int, default=20)
    parser.add_argument("--loop-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    d, n, batch = args.data_dim, args.manifold_dim, args.batch
    build = sbi_mflow.manifold_likelihood_nn("mflow", n, outer_layers=args.outer_layers)
    estimator = build(torch.rand(1000, 2), torch.randn(1000, d)).eval()
    x, theta = torch.randn(batch, d), torch.rand(batch, 2)

    with torch.no_grad():
        chart = best_time(lambda: estimator.chart_log_prob(x, theta), args.repeats)
        exact = best_time(lambda: estimator.log_prob(x, theta), args.repeats)
        modes = {
            mode: best_time(lambda m=mode: estimator.log_det_metric(estimator.encode(x), mode=m),
                            args.repeats)
            for mode in ("forward", "reverse")
        }
        u_small = estimator.encode(x[: args.loop_batch])
    loop_small = best_time(lambda: per_element_log_det(estimator, u_small), 1, warmup=0)
    with torch.no_grad():
        ours_small = estimator.log_det_metric(u_small)
    check = (per_element_log_det(estimator, u_small) - ours_small).abs().max().item()
    loop = loop_small * batch / args.loop_batch

    print(f"exact M-flow likelihood at d={d}, n={n}, {args.outer_layers} outer couplings, "
          f"batch {batch} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"  chart log-likelihood            {chart * 1e3:9.1f} ms")
    print(f"  exact log_prob (ours, auto)     {exact * 1e3:9.1f} ms   ratio {exact / chart:6.1f}"
          f"   (target <= 2n = {2 * n})")
    for mode, seconds in modes.items():
        print(f"    log det term alone, {mode:7s}  {seconds * 1e3:9.1f} ms")
    print(f"  per-element autograd loop       {loop * 1e3:9.1f} ms   ratio {loop / chart:6.1f}"
          f"   (measured on {args.loop_batch} rows: {loop_small:.2f} s, scaled x"
          f"{batch // args.loop_batch}; agrees with ours to {check:.1e})")
    print(f"  speed-up of ours over the loop  {loop / exact:6.1f}x")


if __name__ == "__main__":
    main()
