"""The per-transition record of a NUTS/HMC chain, built from Pyro's public interfaces only.

What a transition did is read from three public places, never from Pyro's private state:

* the potential function (ours): every evaluation U(z), so the number of leapfrog steps and
  the potential energy of the draw (``lp = −U``);
* the kernel's mass-matrix adapter (``kernel.mass_matrix_adapter``, a public, settable
  property; :class:`RecordingMassMatrix` extends Pyro's public ``BlockMassMatrix``): Pyro
  draws the momentum as r = M^{1/2} r̃ with r̃ ~ N(0, I) (``scale``) and turns every new
  momentum back into r̃ = M^{-1/2} r (``unscale``) to compute the kinetic energy ½ r̃ᵀr̃.
  ``scale`` starts a trajectory; each ``unscale`` after it is one proposal (a NUTS leaf,
  or HMC's end point);
* the kernel after the transition (``MCMC(hook_fn=...)``): ``kernel.step_size`` and
  ``kernel.diagnostics()["divergences"]``.

From these, per transition and per chain (Hoffman & Gelman 2014; Betancourt 2017):

* ``energy``: H₀ = U(z₀) + ½ r̃₀ᵀr̃₀ at the start (ArviZ's ``energy``, used by E-BFMI);
* ``accept_prob``: mean over the proposals of min(1, exp(H₀ − H_k)), H_k = U(z_k) + ½ r̃_kᵀr̃_k —
  the statistic Pyro's step-size adaptation uses (Stan's ``accept_stat__``);
* ``num_steps``: leapfrog steps (potential-and-gradient evaluations);
* ``tree_depth`` (NUTS): trajectory doublings. The k-th doubling adds up to 2^(k−1) steps and
  at least one, so after D doublings 2^(D−1) ≤ num_steps ≤ 2^D − 1: D = ⌈log2(num_steps + 1)⌉;
* ``divergent``: Pyro's own verdict (its divergence list grew during the transition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from pyro.infer.mcmc.adaptation import BlockMassMatrix
from torch import Tensor

__all__ = [
    "DIVERGENCE_ENERGY",
    "SAMPLE_STATS",
    "NUTSInfo",
    "RecordingMassMatrix",
    "TransitionRecorder",
]

#: Energy error H_k − H₀ above which Pyro (like Stan) calls a NUTS trajectory divergent.
#: Used only to attribute a divergence of a product-space trajectory to its chains.
DIVERGENCE_ENERGY = 1000.0


@dataclass(frozen=True)
class NUTSInfo:
    """What every transition of every chain did (after warm-up), as (C, N) tensors, in the
    style of blackjax's ``NUTSInfo``: C chains, N kept transitions.

    ``tree_depth`` is NaN for HMC. ``step_size``, ``num_steps`` and ``tree_depth`` are the
    same for all chains of a product state (one shared trajectory).
    """

    divergent: Tensor  # bool
    step_size: Tensor
    num_steps: Tensor
    tree_depth: Tensor
    accept_prob: Tensor
    energy: Tensor
    log_density: Tensor  # −U(z) of the draw (unconstrained space)

    @property
    def num_divergences(self) -> int:
        """Divergent transitions, each chain's counted once."""
        return int(self.divergent.sum())

    @staticmethod
    def concatenate(infos: list[NUTSInfo]) -> NUTSInfo:
        """The chains of several records, in order: (ΣC, N)."""
        return NUTSInfo(**{f.name: torch.cat([getattr(info, f.name) for info in infos])
                           for f in fields(NUTSInfo)})

    def thinned(self, thin: int) -> NUTSInfo:
        """The last transition of each window of ``thin``; a kept transition is divergent
        when any transition of its window diverged."""
        if thin == 1:
            return self
        num = self.divergent.shape[1] // thin * thin
        kept = {f.name: getattr(self, f.name)[:, thin - 1 : num : thin] for f in fields(self)}
        windows = self.divergent[:, :num].reshape(self.divergent.shape[0], -1, thin)
        kept["divergent"] = windows.any(-1)
        return NUTSInfo(**kept)

    def as_arviz(self) -> dict[str, np.ndarray]:
        """ArviZ ``sample_stats``: name → array (num_chains, num_draws)."""
        return {
            name: getattr(self, field_name).numpy().astype(
                bool if field_name == "divergent" else float
            )
            for name, field_name in SAMPLE_STATS.items()
        }


#: ArviZ ``sample_stats`` name → :class:`NUTSInfo` field.
SAMPLE_STATS = {
    "diverging": "divergent",
    "step_size": "step_size",
    "n_steps": "num_steps",
    "tree_depth": "tree_depth",
    "acceptance_rate": "accept_prob",
    "energy": "energy",
    "lp": "log_density",
}


assert {f.name for f in fields(NUTSInfo)} == set(SAMPLE_STATS.values())


def _flat(momentum: dict) -> Tensor:
    return torch.cat([value.reshape(-1) for value in momentum.values()]).detach()


class TransitionRecorder:
    """Listens to one Pyro kernel whose state holds ``num_chains`` chains (1, or C in the
    product mode) and turns each post-warm-up transition into a column of :class:`NUTSInfo`.

    Wire it up with :meth:`on_potential` (from the potential function, per-chain values
    (num_chains,)), :class:`RecordingMassMatrix` and :meth:`hook` (``MCMC(hook_fn=...)``).
    """

    def __init__(self, num_chains: int = 1, is_nuts: bool = True) -> None:
        self.num_chains = num_chains
        self.is_nuts = is_nuts
        self._rows: list[dict[str, Tensor]] = []  # one per kept transition, (C,) each
        self.potential_calls = 0
        self._current_u: Tensor | None = None  # U at the chain's state, (num_chains,)
        self._evaluated: list[tuple[Tensor, Tensor]] = []  # (z, U) since the last draw
        self._start_kinetic: Tensor | None = None
        self._proposals: list[Tensor] = []  # H_k, (num_chains,) each
        self._steps = 0
        self._last_u: Tensor | None = None
        self._divergences_seen = 0

    # ------------------------------------------------------------ event handlers
    def on_potential(self, z: Tensor, values: Tensor) -> None:
        """A potential evaluation at z (num_chains, p) with per-chain values (num_chains,)."""
        z, values = z.detach(), values.detach()
        self.potential_calls += 1
        self._steps += 1
        self._last_u = values
        if self._current_u is None:  # kernel.setup evaluates the initial state first
            self._current_u = values
        self._evaluated.append((z, values))

    def on_momentum_start(self, unscaled: Tensor) -> None:
        """A trajectory starts with the momentum r̃₀ (flat, num_chains·p)."""
        self._start_kinetic = self._kinetic(unscaled)
        self._proposals = []
        self._steps = 0

    def on_momentum(self, unscaled: Tensor) -> None:
        """A proposal's momentum r̃_k, right after the potential evaluation at its z_k."""
        if self._last_u is not None:
            self._proposals.append(self._last_u + self._kinetic(unscaled))

    def hook(self, kernel, params: dict, stage: str, index: int) -> None:
        """``MCMC(hook_fn=...)``: a transition ended with the draw ``params``."""
        draw = params["theta"].detach().reshape(self.num_chains, -1)
        start_u = self._current_u
        self._current_u = self._potential_at(draw)
        if stage.startswith("Sample"):
            divergences = len(kernel.diagnostics()["divergences"])
            divergent = divergences > self._divergences_seen
            self._divergences_seen = divergences
            self._record(start_u, float(kernel.step_size), divergent)
        self._evaluated = []

    # ---------------------------------------------------------------- internals
    def _kinetic(self, unscaled: Tensor) -> Tensor:
        return 0.5 * unscaled.reshape(self.num_chains, -1).double().pow(2).sum(-1)

    def _potential_at(self, draw: Tensor) -> Tensor:
        """U of the draw: a value computed during the transition, or the start's (no move)."""
        if self._evaluated:
            points = torch.stack([z.reshape(self.num_chains, -1) for z, _ in self._evaluated])
            same = (points == draw.to(points)).flatten(1).all(-1).nonzero()
            if same.numel():
                return self._evaluated[int(same[-1])][1]
        return self._current_u

    def _record(self, start_u: Tensor, step_size: float, divergent: bool) -> None:
        steps = self._steps
        start = (start_u.double() + self._start_kinetic).cpu()  # H₀ (num_chains,)
        if self._proposals:
            errors = (torch.stack(self._proposals).double().cpu() - start)  # (K, C)
            errors = torch.nan_to_num(errors, nan=math.inf)
            accept = torch.exp(-errors.clamp(min=0.0)).mean(0)
            worst = errors.max(0).values
        else:
            accept = torch.ones(self.num_chains, dtype=torch.float64)
            worst = torch.zeros(self.num_chains, dtype=torch.float64)
        chain_divergent = self._attribute_divergence(divergent, worst)
        depth = math.ceil(math.log2(steps + 1)) if self.is_nuts else None
        log_density = (-self._current_u.double()).cpu()
        shared = torch.ones(self.num_chains, dtype=torch.float64)
        self._rows.append({
            "divergent": chain_divergent,
            "step_size": shared * step_size,
            "num_steps": shared * steps,
            "tree_depth": shared * (math.nan if depth is None else depth),
            "accept_prob": accept,
            "energy": start,
            "log_density": log_density,
        })

    def info(self) -> NUTSInfo:
        """The record of all kept transitions, (num_chains, num_transitions) per field."""
        if not self._rows:
            empty = torch.zeros(self.num_chains, 0, dtype=torch.float64)
            return NUTSInfo(**{f.name: empty.bool() if f.name == "divergent" else empty
                               for f in fields(NUTSInfo)})
        return NUTSInfo(**{
            name: torch.stack([row[name] for row in self._rows], dim=1)
            for name in self._rows[0]
        })

    def _attribute_divergence(self, divergent: bool, worst_error: Tensor) -> Tensor:
        """Which chains of the state diverged. One chain: Pyro's verdict. Product state:
        the chains whose own energy error crossed :data:`DIVERGENCE_ENERGY`, else the one
        with the largest error, so that each divergent chain is counted once."""
        flags = torch.zeros(self.num_chains, dtype=torch.bool)
        if not divergent:
            return flags
        if self.num_chains == 1:
            return torch.ones(1, dtype=torch.bool)
        flags = worst_error > DIVERGENCE_ENERGY
        if not bool(flags.any()):
            flags[int(worst_error.argmax())] = True
        return flags


class RecordingMassMatrix(BlockMassMatrix):
    """Pyro's ``BlockMassMatrix`` that reports the whitened momenta to a recorder.

    Install with ``kernel.mass_matrix_adapter = RecordingMassMatrix(recorder)`` before
    the run; adaptation and all arithmetic are Pyro's.
    """

    def __init__(self, recorder: TransitionRecorder, init_scale: float = 1.0) -> None:
        super().__init__(init_scale=init_scale)
        self.recorder = recorder

    def scale(self, r_unscaled, r_prototype):
        self.recorder.on_momentum_start(_flat(r_unscaled))
        return super().scale(r_unscaled, r_prototype)

    def unscale(self, r):
        unscaled = super().unscale(r)
        self.recorder.on_momentum(_flat(unscaled))
        return unscaled
