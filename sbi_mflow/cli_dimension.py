"""``sbi-mflow dimension``: estimate the manifold's dimension n of simulated data.

Reads x from a named simulator (``--simulator``, ``--simulations`` runs), a data file
(``--x``, .npy or .pt) or a Zarr store of ``sbi-mflow simulate`` (``--store``), runs
:func:`sbi_mflow.estimate_manifold_dim`, prints the per-n curve and the choice, and writes
``dimension.json`` and ``dimension.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from sbi_mflow.dimension import DimensionSearchConfig, estimate_manifold_dim
from sbi_mflow.pipeline import (
    SIMULATORS,
    CommandError,
    load_array,
    make_simulator,
    prepare_output,
    simulate,
    write_json,
)

__all__ = ["add_dimension_command", "run_dimension"]


def add_dimension_command(commands: Any, add_common: Any) -> None:
    """The ``dimension`` sub-command of the ``sbi-mflow`` parser."""
    parser = commands.add_parser(
        "dimension", help="estimate the manifold dimension n of simulated data",
        description=__doc__.splitlines()[0])
    add_common(parser, default_out="sbi-mflow-dimension")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--simulator", choices=sorted(SIMULATORS))
    source.add_argument("--x", help=".npy/.pt file of x (N, d)")
    source.add_argument("--store", help="Zarr store of `sbi-mflow simulate`")
    parser.add_argument("--simulations", type=int, default=10_000,
                        help="runs of --simulator (default 10000)")
    defaults = DimensionSearchConfig()
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help="manifold-phase steps per candidate n")
    parser.add_argument("--max-unexplained", type=float, default=defaults.max_unexplained,
                        help="largest held-out error (fraction of the standardised variance) "
                             "the chosen n may leave")


def _x(args: argparse.Namespace) -> torch.Tensor:
    if args.simulator:
        simulator = make_simulator(args.simulator)
        return simulate(simulator, args.simulations, False, args.seed,
                        progress=not args.quiet)[1]
    if args.x:
        return load_array(args.x, "x")
    from sbi_mflow.simulation import load_simulations

    try:
        _, x, _ = load_simulations(args.store).valid_simulations()
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from error
    if len(x) == 0:
        raise CommandError(f"The store {args.store} has no finished simulations.")
    return x.float()


def run_dimension(args: argparse.Namespace) -> None:
    x = _x(args)
    out = prepare_output(args.out, args.force)
    try:
        config = DimensionSearchConfig(steps=args.steps, max_unexplained=args.max_unexplained)
        result = estimate_manifold_dim(x, config, device=args.device, seed=args.seed,
                                       show_progress_bars=not args.quiet)
    except ValueError as error:
        raise CommandError(str(error)) from error
    write_json(out / "dimension.json", result.to_dict())
    result.plot(out / "dimension.png")
    print(f"\n{result}\n\nwrote dimension.json, dimension.png to {out}")
