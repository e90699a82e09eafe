"""Cost of the exact M-flow log-likelihood (with −½ log det JᵀJ) over the chart value.

Setup: batch 256, d = 40, n = 14, 20 outer coupling layers (the defaults below). Prints, as
ratios to the chart log-likelihood (one encoder pass + inner flow), and writes to
``benchmarks/results/jacobian.json``:

* our exact ``log_prob`` (one batched forward-/reverse-mode Jacobian pass), target ≤ 2n;
* the log-det term alone in forward and in reverse mode;
* a per-element autograd loop like the paper's reference code: one
  ``torch.autograd.grad`` call per output element (B·d calls, each through the whole
  batch). That loop is measured on a sub-batch and scaled linearly in B (a lower bound:
  each call also gets slower as the batch grows; the reference even loops per layer).

Run: ``python -m benchmarks.jacobian [--batch 256] [--loop-batch 8] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import sbi_mflow
from benchmarks._results import (
    describe_machine,
    load_result,
    machine,
    markdown_table,
    write_result,
)
from benchmarks._timing import best_time

__all__ = ["per_element_log_det", "section"]

RESULT = "jacobian"

# quantity key in the JSON -> label in the table
QUANTITIES = {
    "chart_log_prob": "chart log-likelihood (encoder + inner flow)",
    "exact_log_prob": "exact `log_prob` (one batched Jacobian pass, mode chosen automatically)",
    "log_det_forward": "log det term alone, forward mode",
    "log_det_reverse": "log det term alone, reverse mode",
    "per_element_loop": "per-element autograd loop like the reference code",
}


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--data-dim", type=int, default=40)
    parser.add_argument("--manifold-dim", type=int, default=14)
    parser.add_argument("--outer-layers", type=int, default=20)
    parser.add_argument("--loop-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def _command(settings: dict[str, Any]) -> str:
    """The command line that reproduces a run with these settings (non-default options)."""
    defaults = vars(_parser().parse_args([]))
    options = [f"--{key.replace('_', '-')} {settings[key]}" for key in defaults
               if key in settings and settings[key] != defaults[key]]
    return " ".join(["python -m benchmarks.jacobian", *options])


def _duration(ms: float) -> str:
    return f"{ms / 1e3:.0f} s" if ms >= 1e4 else f"{ms:.1f} ms"


def section() -> str:
    """Markdown section from ``benchmarks/results/jacobian.json`` ("" when it is missing)."""
    record = load_result(RESULT)
    if record is None:
        return ""
    settings = record.get("settings", {})
    ms = {row["quantity"]: row["ms"] for row in record.get("rows", [])}
    chart = ms["chart_log_prob"]
    n = settings.get("manifold_dim")
    rows = []
    for key, label in QUANTITIES.items():
        if key not in ms:
            continue
        ratio = "" if key.startswith("log_det") else f"{ms[key] / chart:.1f}"
        if key == "exact_log_prob" and n:
            met = "met" if ms[key] / chart <= 2 * n else "missed"
            ratio += f" (target ≤ 2n = {2 * n}: {met})"
        if key == "per_element_loop":
            ratio += (f" (measured on {settings.get('loop_batch')} rows in "
                      f"{record['loop_measured_s']:.2f} s, scaled linearly: a lower bound)")
        rows.append([label, _duration(ms[key]), ratio])
    text = (
        f"## Exact likelihood cost (`{_command(settings)}`)\n\n"
        f"The M-flow's exact log-likelihood needs −½ log det JᵀJ of the decoder's "
        f"{settings.get('data_dim')} × {n} Jacobian J at every point; the chart "
        f"log-likelihood (encoder and inner flow) does not. Times are the best of "
        f"{settings.get('repeats')} calls, for a batch of {settings.get('batch')} points, "
        f"d = {settings.get('data_dim')}, n = {n}, {settings.get('outer_layers')} outer coupling "
        f"layers; the ratio column divides by the chart log-likelihood's time. The "
        f"per-element loop takes one `torch.autograd.grad` call per output element, as the "
        f"paper's reference code does.\n\n"
        + markdown_table(["quantity", "time", "ratio to the chart log-likelihood"], rows)
        + "\n\n")
    if "per_element_loop" in ms:
        text += (f"Ours agrees with the per-element loop to {record['max_abs_difference']:.1e} "
                 f"and is at least {ms['per_element_loop'] / ms['exact_log_prob']:.0f}× "
                 f"faster.\n\n")
    load = record.get("machine", {}).get("load_average")
    return text + (f"Machine: {describe_machine(record)}"
                   + (f"; load average {load[0]:.1f} when it ran" if load else "") + ".\n")


def main() -> None:
    args = _parser().parse_args()
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
    seconds = {"chart_log_prob": chart, "exact_log_prob": exact,
               **{f"log_det_{mode}": value for mode, value in modes.items()},
               "per_element_loop": loop}
    path = write_result(RESULT, {
        "settings": {**vars(args), "version": sbi_mflow.__version__},
        "machine": machine(),
        "rows": [{"quantity": key, "ms": 1e3 * value} for key, value in seconds.items()],
        "loop_measured_s": loop_small, "max_abs_difference": check,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
