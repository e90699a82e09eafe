"""Independent Pyro kernels whose potentials are evaluated together, one batch per step.

Each chain is its own Pyro kernel (own step size, mass matrix, trajectories,
statistics) in its own thread. The threads never run at the same time: a chain runs
until it needs a potential value, then hands control back; once every running chain
waits, all their points are evaluated in one batched call U(z (B, p)) -> (B,) with one
backward pass for the gradients, and the chains resume one after the other, always in
the same order. So C chains cost about one batched potential call per leapfrog round
(plus Pyro's own per-chain bookkeeping), the random numbers are drawn in a fixed order
(seeded runs repeat exactly), and each chain is exactly a Pyro NUTS chain.

Each chain is driven through Pyro's public kernel protocol (``setup``, ``sample``,
``diagnostics``, ``cleanup``; what ``MCMC.run`` does for one chain), not by ``MCMC.run``
itself: ``MCMC.run`` is wrapped in one class-level ``poutine.block`` handler, which cannot be
entered by two runs at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["LockstepChains"]


class _Aborted(Exception):
    """Raised inside a chain's thread to unwind it when another chain failed."""


class _ValueWithGradient(torch.autograd.Function):
    """A scalar with a precomputed value and gradient w.r.t. z (from the batched pass)."""

    @staticmethod
    def forward(ctx, z: Tensor, value: Tensor, gradient: Tensor) -> Tensor:
        ctx.save_for_backward(gradient)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (gradient,) = ctx.saved_tensors
        return grad_output * gradient, None, None


class LockstepChains:
    """Run ``num_chains`` zero-argument callables (each drives one chain's kernel) whose
    potential functions come from :meth:`potential_fn`.

    Args:
        energy: batched energy U: z (B, p) -> (B,), differentiable in z.
        num_chains: number of chains.
        full_batch: evaluate all ``num_chains`` rows every round, chain c in row c (chains
            that have finished or wait repeat their last point), for energies whose rows
            are tied to chains (e.g. one observation per block of chains).
    """

    def __init__(self, energy: Callable[[Tensor], Tensor], num_chains: int,
                 full_batch: bool = False) -> None:
        self.energy = energy
        self.num_chains = num_chains
        self.full_batch = full_batch
        self._last_z: dict[int, Tensor] = {}
        self.batched_calls = 0
        self._turn = [threading.Event() for _ in range(num_chains)]
        self._returned = threading.Event()
        self._requests: dict[int, Tensor] = {}
        self._results: dict[int, tuple[Tensor, Tensor]] = {}
        self._errors: list[BaseException] = []
        self._aborted = False

    # ------------------------------------------------------- inside chain threads
    def potential_fn(
        self, chain: int, on_value: Callable[[Tensor, Tensor], None]
    ) -> Callable[[dict[str, Tensor]], Tensor]:
        """Pyro potential ``{"theta": z (p,)} -> U`` of ``chain``; ``on_value(z (1, p),
        U (1,))`` sees every value."""

        def potential(params: dict[str, Tensor]) -> Tensor:
            z = params["theta"]
            self._requests[chain] = z.detach()
            self._pause(chain)
            value, gradient = self._results.pop(chain)
            on_value(z.detach().unsqueeze(0), value.reshape(1))
            return _ValueWithGradient.apply(z, value, gradient)

        return potential

    def _pause(self, chain: int) -> None:
        self._returned.set()
        self._turn[chain].wait()
        self._turn[chain].clear()
        if self._aborted:
            raise _Aborted()

    def _thread_body(self, chain: int, run: Callable[[], None]) -> None:
        try:
            self._turn[chain].wait()
            self._turn[chain].clear()
            if not self._aborted:
                run()
        except _Aborted:
            pass
        except BaseException as error:  # reported to the caller by run()
            self._errors.append(error)
        finally:
            self._returned.set()

    # -------------------------------------------------------------- scheduler
    def _resume(self, chain: int) -> None:
        self._returned.clear()
        self._turn[chain].set()
        self._returned.wait()

    def _evaluate(self) -> None:
        chains = sorted(self._requests)
        self._last_z.update({c: self._requests.pop(c) for c in chains})
        rows = list(range(self.num_chains)) if self.full_batch else chains
        if self.full_batch and len(self._last_z) < self.num_chains:  # first round: any point
            fill = self._last_z[chains[0]]
            rows_z = [self._last_z.get(c, fill) for c in rows]
        else:
            rows_z = [self._last_z[c] for c in rows]
        z = torch.stack(rows_z).detach().requires_grad_(True)
        with torch.enable_grad():
            values = self.energy(z).to(z.dtype)
            (gradients,) = torch.autograd.grad(values.sum(), z)
        self.batched_calls += 1
        values, gradients = values.detach(), gradients.detach()
        for position, chain in enumerate(chains):
            row = chain if self.full_batch else position
            self._results[chain] = (values[row], gradients[row])

    def run(self, runs: list[Callable[[], None]]) -> None:
        """Run the chains (``runs[c]`` drives chain c) to the end."""
        if len(runs) != self.num_chains:
            raise ValueError(f"expected {self.num_chains} runs, got {len(runs)}.")
        threads = [
            threading.Thread(target=self._thread_body, args=(c, run), daemon=True,
                             name=f"sbi-mflow-chain-{c}")
            for c, run in enumerate(runs)
        ]
        for thread in threads:
            thread.start()
        finished = False
        try:
            running = list(range(self.num_chains))
            while running and not self._errors:
                for chain in running:
                    self._resume(chain)
                    if self._errors:
                        break
                running = sorted(self._requests)
                if running and not self._errors:
                    self._evaluate()
            finished = not self._errors
        finally:
            if not finished:
                self._aborted = True
                for chain in reversed(range(self.num_chains)):
                    if threads[chain].is_alive():
                        self._resume(chain)
            for thread in threads:
                thread.join()
        if self._errors:
            raise self._errors[0]
