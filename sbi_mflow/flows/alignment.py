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
* P̄ = mean_i T_i T_iᵀ averages the tangent projectors; its eigenvectors, by decreasing
  eigenvalue, are the rows of the rotation Q (d × d, orthogonal, log|det Q| = 0).

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

__all__ = ["OrthogonalTransform", "tangent_rotation"]


def tangent_rotation(points: Tensor, manifold_dim: int, neighbours: int | None = None,
                     max_points: int = 2000, chunk: int = 512) -> Tensor:
    """Orthogonal Q (d, d) whose first n rows span the average tangent space of ``points``.

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
        return torch.eye(dim, dtype=points.dtype)
    projector = torch.zeros(dim, dim, dtype=torch.float64)
    for rows in torch.arange(num).split(chunk):
        nearest = torch.cdist(x[rows], x).topk(k + 1, largest=False).indices  # (c, k+1)
        local = x[nearest]
        local = local - local.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(local, full_matrices=False)  # (c, min(k+1, d), d)
        tangent = vh[:, :manifold_dim]  # (c, n, d)
        projector += torch.einsum("cnd,cne->de", tangent, tangent)
    _, vectors = torch.linalg.eigh(projector / num)
    return vectors.flip(-1).T.contiguous().to(points.dtype)


class OrthogonalTransform(Transform):
    """y = Q x for a fixed (buffer) Q, orthogonal up to its storage precision.

    The inverse solves Q x = y and the log-determinant is log|det Q| of the stored matrix
    (≈ 0), so that forward and inverse are exact inverses of each other in any dtype, also
    after Q was rounded to float32 and the model converted to float64.
    """

    def __init__(self, matrix: Tensor) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)

    def _logabsdet(self, inputs: Tensor) -> Tensor:
        return torch.linalg.slogdet(self.matrix).logabsdet.expand(inputs.shape[0])

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return inputs @ self.matrix.T, self._logabsdet(inputs)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        outputs, _ = torch.linalg.solve_ex(self.matrix.T, inputs, left=False)
        return outputs, -self._logabsdet(inputs)
