"""``sbi-mflow simulate`` and the ``--store`` source of ``sbi-mflow train``.

``simulate`` draws θ from a named simulator's prior (seeded with ``--seed``), runs
:func:`sbi_mflow.simulate` in this process, on a ``LocalCluster`` (``--local-workers``) or on
a running Dask scheduler (``--scheduler``), and records the simulator's name in the store so
that ``train --store`` (and then ``infer``) can rebuild the prior.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from sbi_mflow.pipeline import (
    SIMULATORS,
    CommandError,
    box_prior_metadata,
    make_simulator,
    prior_from_run,
)

__all__ = ["add_simulate_command", "run_simulate", "training_data_from_store"]


def add_simulate_command(commands: Any) -> None:
    """The ``simulate`` sub-command of the ``sbi-mflow`` parser."""
    parser = commands.add_parser(
        "simulate", help="fill a Zarr store with simulations (Dask)",
        description="Simulate θ ~ prior of a named simulator into a Zarr store, in this "
                    "process or on a Dask cluster; rerun the same command to resume.")
    parser.add_argument("--simulator", required=True, choices=sorted(SIMULATORS))
    parser.add_argument("--num", type=int, required=True, help="number of simulations")
    parser.add_argument("--store", required=True, help="Zarr store path (resumed if it exists)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running Dask scheduler, "
                                           "e.g. tcp://host:8786 (default: this process)")
    where.add_argument("--local-workers", type=int,
                       help="start a LocalCluster with this many worker processes")
    parser.add_argument("--with-score", action="store_true", help="also store joint scores")
    parser.add_argument("--chunk-size", type=int, default=1000, help="rows per task")
    parser.add_argument("--seed", type=int, default=0, help="seeds θ ~ prior and the chunks")
    parser.add_argument("--retries", type=int, default=2, help="re-submissions of a chunk")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(device="cpu", threads=1)


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Any]:
    if args.scheduler:
        yield args.scheduler
    elif args.local_workers is not None:
        if args.local_workers < 1:
            raise CommandError("--local-workers must be at least 1.")
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=args.local_workers, processes=True, threads_per_worker=1,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            if not args.quiet:
                print(f"Dask LocalCluster of {args.local_workers} workers; dashboard: "
                      f"{client.dashboard_link}")
            yield client
    else:
        yield None


def run_simulate(args: argparse.Namespace) -> None:
    from sbi_mflow.simulation import simulate

    if args.num < 1:
        raise CommandError("--num must be at least 1.")
    simulator = make_simulator(args.simulator)
    torch.manual_seed(args.seed)
    theta = simulator.prior.sample((args.num,))
    with _client(args) as client:
        try:
            result = simulate(simulator, theta, store=args.store, client=client,
                              chunk_size=args.chunk_size, seed=args.seed,
                              with_score=args.with_score, retries=args.retries,
                              progress=not args.quiet, metadata={"simulator": args.simulator})
        except (ValueError, FileNotFoundError) as error:
            raise CommandError(str(error)) from error
    print(f"{args.num - result.num_failed} of {args.num} simulations of {args.simulator} in "
          f"{args.store} ({result.num_failed} failed)")


def training_data_from_store(args: argparse.Namespace, run: dict[str, Any]):
    """(θ, x, score-or-None, prior, manifold_dim) of the valid rows of ``args.store``.

    The prior comes from the simulator named in the store, else from a box (``--prior-low``
    and ``--prior-high``, or the range of θ) as for data files; ``run`` records which.
    """
    from sbi_mflow.simulation import load_simulations

    try:
        result = load_simulations(args.store)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from error
    theta, x, score = result.valid_simulations()
    if len(theta) == 0:
        raise CommandError(f"The store {args.store} has no finished simulations.")
    if result.num_failed:
        print(f"note: {result.num_failed} of {len(result.theta)} simulations in {args.store} "
              f"failed or have not finished; training on the other {len(theta)}.")
    if args.scandal_weight > 0 and score is None:
        raise CommandError("--scandal-weight needs joint scores, but the store has none "
                           "(simulate with --with-score).")
    score = score.float() if args.scandal_weight > 0 else None
    run["store"] = str(args.store)
    name = result.metadata.get("simulator")
    if name:
        simulator = make_simulator(name)
        run["simulator"] = name
        prior, manifold_dim = simulator.prior, args.manifold_dim or simulator.manifold_dim
    else:
        run["prior_box"] = box_prior_metadata(theta, args.prior_low, args.prior_high)
        prior, _ = prior_from_run(run, args.device)
        manifold_dim = args.manifold_dim or "auto"
    torch.manual_seed(args.seed)
    return theta.float(), x.float(), score, prior, manifold_dim
