"""A diagonal mass matrix adapted on the warm-up draws of all chains together.

In the product mode (:mod:`sbi_mflow.sampling.chains`) Pyro adapts one diagonal entry per
chain and coordinate, each from that chain's own warm-up draws. A chain that spends its
warm-up in one mode of a multimodal posterior then gets a mass matrix scaled to that mode's
width, and the shared step size and trajectory of the product state must suit the
narrowest chain. :class:`PooledMassMatrix` gives every chain the same variances: the mean
over chains of each chain's own warm-up variance (Welford's algorithm and Stan's
regularisation, both Pyro's), as cross-chain adaptation pools its estimates (Hoffman, Radul
& Sountsov 2021). It leaves out the spread *between* chains: with the chains started in
every mode (:mod:`sbi_mflow.sampling.init`), the variance of all draws together would add
the distance between modes, and each chain would move across its own mode with steps
scaled to that distance (deeper trees, no better mixing: whether a chain crosses a barrier
depends on the energy of its momentum draws, which no mass matrix changes). The mass
matrix is fixed after warm-up, so the chains' targets are unchanged. When one state holds
the chains of several observations (``groups``: consecutive blocks of chains, one per
observation), each block is pooled on its own, so each observation's chains get the
variances of its own posterior.

References:
    Hoffman, Radul, Sountsov. An adaptive-MCMC scheme for setting trajectory lengths in
    Hamiltonian Monte Carlo. AISTATS 2021.
"""

from __future__ import annotations

import torch
from pyro.ops.welford import WelfordCovariance

from sbi_mflow.sampling.record import RecordingMassMatrix, TransitionRecorder

__all__ = ["PooledMassMatrix"]


class PooledMassMatrix(RecordingMassMatrix):
    """:class:`RecordingMassMatrix` of a product state of ``num_chains`` chains in
    ``groups`` consecutive blocks, whose diagonal inverse mass matrix is, for each block,
    the mean of its chains' own warm-up variances: (C·p,) = G pooled (p,) each repeated
    C/G times."""

    def __init__(self, recorder: TransitionRecorder, num_chains: int, groups: int = 1,
                 init_scale: float = 1.0) -> None:
        super().__init__(recorder, init_scale=init_scale)
        if num_chains % groups:
            raise ValueError(f"{num_chains} chains do not split into {groups} equal groups.")
        self.num_chains = num_chains
        self.groups = groups
        self._pooled: dict[tuple, WelfordCovariance] = {}

    def configure(self, mass_matrix_shape, adapt_mass_matrix=True, options=None):
        super().configure(mass_matrix_shape, adapt_mass_matrix, options or {})
        for shape in mass_matrix_shape.values():
            if len(shape) != 1:
                raise ValueError("PooledMassMatrix adapts a diagonal mass matrix only.")
            if shape[0] % self.num_chains:
                raise ValueError(
                    f"mass matrix of size {shape[0]} is not {self.num_chains} chains' blocks."
                )
        if adapt_mass_matrix:
            # Pyro's diagonal Welford is elementwise: one estimator holds all C chains
            self._pooled = {names: WelfordCovariance(diagonal=True)
                            for names in mass_matrix_shape}

    def update(self, z, z_grad):
        super().update(z, z_grad)
        for site_names, welford in self._pooled.items():
            flat = torch.cat([z[name].detach().reshape(-1) for name in site_names])
            welford.update(flat.reshape(self.groups, self.num_chains // self.groups, -1))

    def end_adaptation(self):
        inverse_mass_matrix = {}
        for site_names, welford in self._pooled.items():
            per_chain = welford.get_covariance(regularize=True)  # (G, C/G, p)
            pooled = per_chain.mean(dim=1)  # (G, p)
            shared = pooled.repeat_interleave(self.num_chains // self.groups, dim=0)
            inverse_mass_matrix[site_names] = shared.reshape(-1)
            welford.reset()
        self.inverse_mass_matrix = inverse_mass_matrix

