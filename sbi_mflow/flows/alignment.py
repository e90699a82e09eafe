"""Tangent alignment: a fixed rotation that starts the chart on the data's tangent space.

At initialisation the outer flow is close to the identity, so the projection keeps n of the
d standardised coordinates and drops the others. If a dropped coordinate varies along the
manifold, the flow must rotate information between coordinates to reconstruct the data,
which coupling layers do poorly: the manifold phase then stalls at a large reconstruction
error (seen on about one seed in three). The alignment rotates standardised x so that the
kept coordinates span the data's average tangent space and the dropped ones its average
normal space:

* for each of up to ``max_points`` points, the top-n principal directions of its
  ``neighbours`` nearest neighbours estimate the tangent space T_i (local PCA);
* P̄ = mean_i T_i T_iᵀ averages the tangent projectors; its top-n eigenvectors form the
  frame T (d × n);
* the rotation is the product of n Householder reflections Q = H_1 ⋯ H_n with T = Q R
  (QR decomposition): the first n coordinates of Qᵀ x are ±Tᵀ x. Reflections
  H = I − 2 v vᵀ / vᵀv are orthogonal to working precision in any dtype, so forward and
  inverse are exact inverses with log|det| = 0, and nothing but products and sums runs at
  training time (CUDA-graph friendly).

Global PCA is not enough: a curved manifold can have as much variance across its normal
direction as along a tangent one (the paper's polynomial surface: the height has the
standard deviation of the two latent coordinates).

References:
    Kambhatla, Leen. Dimension reduction by local principal component analysis. Neural
    Computation 9 (1997).
"""

from __future__ import annotations

import torch
from nflows.transforms import Transform
from torch import Tensor

__all__ = ["HouseholderAlignment", "tangent_frame"]


def tangent_frame(points: Tensor, manifold_dim: int, neighbours: int | None = None,
                  max_points: int = 2000, chunk: int = 512) -> Tensor:
    """Orthonormal frame T (d, n) of the average tangent space of ``points``, the most
    tangent direction first.

    Args:
        points: standardised data (N, d).
        manifold_dim: n.
        neighbours: k of the local PCA (default max(20, 3n)), capped at N − 1.
        max_points: points used (the first ones; the data are i.i.d. simulations).
    """
    x = points[torch.isfinite(points).all(1)][:max_points].detach().to("cpu", torch.float64)
    num, dim = x.shape
    k = min(neighbours or max(20, 3 * manifold_dim), num - 1)
    if k <= manifold_dim:
        return torch.eye(dim, manifold_dim, dtype=points.dtype)
    projector = torch.zeros(dim, dim, dtype=torch.float64)
    for rows in torch.arange(num).split(chunk):
        nearest = torch.cdist(x[rows], x).topk(k + 1, largest=False).indices  # (c, k+1)
        local = x[nearest]
        local = local - local.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(local, full_matrices=False)  # (c, min(k+1, d), d)
        tangent = vh[:, :manifold_dim]  # (c, n, d)
        projector += torch.einsum("cnd,cne->de", tangent, tangent)
    _, vectors = torch.linalg.eigh(projector / num)
    return vectors.flip(-1)[:, :manifold_dim].contiguous().to(points.dtype)


class HouseholderAlignment(Transform):
    """y = Qᵀ x with Q = H_1 ⋯ H_k, H_i = I − 2 v_i v_iᵀ / v_iᵀ v_i (fixed vectors).

    Args:
        vectors: (k, d), the Householder vectors (buffers).
    """

    def __init__(self, vectors: Tensor) -> None:
        super().__init__()
        self.register_buffer("vectors", vectors)

    @classmethod
    def from_frame(cls, frame: Tensor) -> HouseholderAlignment:
        """The k = n reflections whose product Q has the columns of ``frame`` (d, n),
        up to sign, as its first n columns (Householder QR of the frame)."""
        reflectors, _ = torch.geqrf(frame.to(torch.float64))
        dim, count = frame.shape
        vectors = torch.zeros(count, dim, dtype=torch.float64)
        for i in range(count):
            vectors[i, i] = 1.0
            vectors[i, i + 1 :] = reflectors[i + 1 :, i]
        return cls(vectors.to(frame.dtype))

    @staticmethod
    def _reflect(inputs: Tensor, vector: Tensor) -> Tensor:
        return inputs - (inputs @ vector).unsqueeze(-1) * (2.0 / vector.dot(vector) * vector)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        for vector in self.vectors:  # Qᵀ x = H_k ⋯ H_1 x
            inputs = self._reflect(inputs, vector)
        return inputs, inputs.new_zeros(inputs.shape[0])

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        for vector in self.vectors.flip(0):  # Q y = H_1 ⋯ H_k y
            inputs = self._reflect(inputs, vector)
        return inputs, inputs.new_zeros(inputs.shape[0])
