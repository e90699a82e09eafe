"""The paper's "power" simulator: a Gaussian mixture on a rotated polynomial surface.

Latents ``z ∈ R²`` and a component label ``c``:

- ``c = 0`` (prob. 0.6): ``z ~ N((1, -1), 2² I)``;
- ``c = 1`` (prob. 0.4): ``z ~ N((-1, 1), σ(θ)² I)``, ``σ(θ) = 0.6 + 0.4 θ ∈ [0.2, 1]``.

Surface: ``F(z) = exp(-0.1 |z|²) Σ_k a_k m_k(z)`` with the 21 published coefficients ``a_k``
(monomials of degree ≤ 5 in scikit-learn ``PolynomialFeatures(5)`` order), embedded as
``x = R (z1, z2, F(z))ᵀ`` with the published rotation ``R`` (d = 3, n = 2, p = 1, θ ∈ [-1, 1]).

The chart g*(z) = R (z1, z2, F(z)) covers the whole surface;
:meth:`PolynomialSurface.manifold_chart` gives it with its inverse as a torch module
(:class:`PolynomialSurfaceChart`, an ``sbi_mflow.PrescribedChart``), the true manifold of a
flow on a prescribed manifold (``sbi_mflow.manifold_likelihood_nn("fom", chart=...)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._posterior import grid_posterior
from .base import ConditionalSimulator, _out_dtype, _pair_dtype, _rand, _randn

__all__ = ["PolynomialSurface", "PolynomialSurfaceChart"]

# (coefficient, power of z1, power of z2), sklearn PolynomialFeatures(5) order
_COEFFS = [
    -1.2168586604e00, 1.5222185058e00, -1.2137184775e00,
    5.6508287792e-02, -2.3891580118e-02, -4.6679008635e-02,
    -5.5684866245e-02, -7.6749463583e-03, -5.7179289919e-02, -5.1694842320e-02,
    1.3713569766e-02, 1.9578321017e-04, -7.0856847415e-03, -6.6261159038e-03, 3.3305025719e-03,
    -8.3231939924e-03, -1.0951862646e-02, 4.0810678602e-03, -4.6477796818e-03,
    -8.8060082049e-03, 1.2115704380e-02,
]  # fmt: skip
_POWERS = [(deg - k, k) for deg in range(6) for k in range(deg + 1)]
_ROTATION = [
    [0.97388721591235750, -0.22686056735015556, -0.0088302697604824669],
    [0.22703193820535869, 0.97307389388173038, 0.039795679169538759],
    [-0.00043556537462748507, -0.040761256450362007, 0.99916881969734839],
]
_W_VAR = 0.4
_MU_FIX = (1.0, -1.0)
_MU_VAR = (-1.0, 1.0)
_SIGMA_FIX = 2.0


def _rotation(device: torch.device) -> Tensor:
    return torch.tensor(_ROTATION, dtype=torch.float64, device=device)


class PolynomialSurfaceChart(nn.Module):
    """The surface's chart g*(z) = R (z1, z2, F(z))ᵀ, R² → R³, and its inverse.

    ``decode(z)`` is :meth:`PolynomialSurface.embed_latent`, ``encode(x)`` the first output of
    :meth:`PolynomialSurface.chart` (z = the first two components of Rᵀx: the inverse on the
    surface, the foot of the vertical in the rotated frame off it). Both compute in float64
    (the published rotation) and return the input's dtype; autograd works through
    ``decode``. Satisfies ``sbi_mflow.PrescribedChart`` (registered there as
    "polynomial-surface"); no state, so ``options`` is empty.
    """

    manifold_dim = 2
    data_dim = 3

    @property
    def options(self) -> dict:
        return {}

    def decode(self, u: Tensor) -> Tensor:
        """g*(u): (B, 2) -> (B, 3)."""
        return PolynomialSurface.embed_latent(u.double()).to(u.dtype)

    def encode(self, x: Tensor) -> Tensor:
        """z = (Rᵀx)_{1:2}: (B, 3) -> (B, 2)."""
        return PolynomialSurface.chart(x.double())[0].to(x.dtype)


class PolynomialSurface(ConditionalSimulator):
    """Mixture model on a polynomial surface (Brehmer & Cranmer 2020, "power").

    Latent vector passed around internally: ``z = (z1, z2, c)`` (float64, ``(N, 3)``).
    ``offset_tol`` is the relative tolerance ``|y - F(z)| <= offset_tol (1 + |F(z)|)`` used by
    :meth:`log_likelihood` to decide whether ``x`` is on the surface (default 1e-4, loose enough
    for float32 data).
    """

    manifold_dim = 2
    data_dim = 3
    param_dim = 1

    def __init__(self, offset_tol: float = 1e-4, prior_device: str | torch.device = "cpu"):
        super().__init__(prior_device)
        self.offset_tol = offset_tol
        self._low = torch.tensor([-1.0], dtype=torch.float64)
        self._high = torch.tensor([1.0], dtype=torch.float64)

    # --------------------------------------------------------------------------- surface
    @staticmethod
    def _rotation(device: torch.device) -> Tensor:
        return _rotation(device)

    @staticmethod
    def height(z: Tensor) -> tuple[Tensor, Tensor]:
        """``F(z)`` ``(N,)`` and its gradient ``∇F(z)`` ``(N, 2)`` for ``z (N, 2)``."""
        z1, z2 = z[:, 0], z[:, 1]
        p1, p2 = [torch.ones_like(z1)], [torch.ones_like(z2)]
        for _ in range(5):
            p1.append(p1[-1] * z1)
            p2.append(p2[-1] * z2)
        poly = torch.zeros_like(z1)
        d1 = torch.zeros_like(z1)
        d2 = torch.zeros_like(z1)
        for a, (i, j) in zip(_COEFFS, _POWERS, strict=True):
            poly = poly + a * p1[i] * p2[j]
            if i > 0:
                d1 = d1 + (a * i) * p1[i - 1] * p2[j]
            if j > 0:
                d2 = d2 + (a * j) * p1[i] * p2[j - 1]
        damp = torch.exp(-0.1 * (z1**2 + z2**2))
        f = damp * poly
        grad = torch.stack([damp * (d1 - 0.2 * z1 * poly), damp * (d2 - 0.2 * z2 * poly)], dim=1)
        return f, grad

    @staticmethod
    def embed_latent(z: Tensor) -> Tensor:
        """Chart ``g(z) = R (z1, z2, F(z))ᵀ`` for float64 ``z (N, 2)`` (differentiable)."""
        f, _ = PolynomialSurface.height(z)
        w = torch.cat([z, f.unsqueeze(1)], dim=1)
        return w @ _rotation(z.device).T

    def _embed(self, z: Tensor) -> Tensor:
        return self.embed_latent(z[:, :2])

    @staticmethod
    def chart(x: Tensor) -> tuple[Tensor, Tensor]:
        """Inverse chart: ``z (N, 2)`` and vertical offset ``y - F(z)`` ``(N,)`` for float64 x."""
        w = x @ _rotation(x.device)
        z = w[:, :2]
        f, _ = PolynomialSurface.height(z)
        return z, w[:, 2] - f

    def manifold_chart(self) -> PolynomialSurfaceChart:
        """g* = :meth:`embed_latent` with its inverse (:meth:`chart`) as a torch module, for
        ``sbi_mflow.manifold_likelihood_nn("fom", chart=...)``."""
        return PolynomialSurfaceChart()

    # ---------------------------------------------------------------------------- latents
    @staticmethod
    def _sigma(theta: Tensor) -> Tensor:
        return 0.6 + 0.4 * theta[:, 0]

    def _simulate_latent(self, theta: Tensor) -> Tensor:
        n, dev = theta.shape[0], theta.device
        c = (_rand(n, device=dev) < _W_VAR).to(torch.float64)
        eps = _randn(n, 2, device=dev)
        mu_fix = torch.tensor(_MU_FIX, dtype=torch.float64, device=dev)
        mu_var = torch.tensor(_MU_VAR, dtype=torch.float64, device=dev)
        sig = self._sigma(theta).unsqueeze(1)
        z_var = mu_var + sig * eps
        z_fix = mu_fix + _SIGMA_FIX * eps
        z = torch.where(c.unsqueeze(1) > 0.5, z_var, z_fix)
        return torch.cat([z, c.unsqueeze(1)], dim=1)

    @staticmethod
    def _log_normal2(z: Tensor, mu: tuple[float, float], sigma: Tensor | float) -> Tensor:
        mu_t = torch.tensor(mu, dtype=z.dtype, device=z.device)
        sq = ((z - mu_t) ** 2).sum(dim=1)
        if not isinstance(sigma, Tensor):
            sigma = torch.full_like(sq, sigma)
        return -0.5 * sq / sigma**2 - 2.0 * torch.log(sigma) - math.log(2 * math.pi)

    def joint_log_prob(self, z: Tensor, theta: Tensor) -> Tensor:
        """``log p(z, c | θ)`` (exact, normalised over ``R² × {0, 1}``) for ``z = (z1, z2, c)``."""
        zz, c = z[:, :2], z[:, 2]
        lp_var = math.log(_W_VAR) + self._log_normal2(zz, _MU_VAR, self._sigma(theta))
        lp_fix = math.log(1 - _W_VAR) + self._log_normal2(zz, _MU_FIX, _SIGMA_FIX)
        return torch.where(c > 0.5, lp_var, lp_fix)

    def joint_score(self, z: Tensor, theta: Tensor) -> Tensor:
        """``∂θ log p(z, c|θ) = c · 0.4 (|z - μ_var|²/σ³ - 2/σ)``, shape ``(N, 1)``."""
        sig = self._sigma(theta)
        mu = torch.tensor(_MU_VAR, dtype=z.dtype, device=z.device)
        sq = ((z[:, :2] - mu) ** 2).sum(dim=1)
        t = z[:, 2] * 0.4 * (sq / sig**3 - 2.0 / sig)
        return t.unsqueeze(1)

    def latent_log_prob(self, z: Tensor, theta: Tensor) -> Tensor:
        """Mixture density ``log p_z(z | θ)`` on ``R²`` (component summed out), ``(N,)``."""
        lp_var = math.log(_W_VAR) + self._log_normal2(z, _MU_VAR, self._sigma(theta))
        lp_fix = math.log(1 - _W_VAR) + self._log_normal2(z, _MU_FIX, _SIGMA_FIX)
        return torch.logaddexp(lp_var, lp_fix)

    # ------------------------------------------------------------------------ likelihood
    def log_likelihood(self, x: Tensor, theta: Tensor) -> Tensor:
        """Normalised density w.r.t. the surface's area element, ``(N,)``.

        ``log p(x|θ) = log p_z(z|θ) - ½ log(1 + |∇F(z)|²)``, ``z`` = first two components of
        ``Rᵀx``; ``-inf`` where ``|offset| > offset_tol (1 + |F(z)|)`` (x off the surface).
        ``x (N, 3)`` broadcasts with ``theta (N, 1)`` or ``(1,)``. Differentiable in θ.
        """
        xx, th = self._broadcast(x, theta)
        z, offset = self.chart(xx)
        f, grad = self.height(z)
        lp = self.latent_log_prob(z, th) - 0.5 * torch.log1p((grad**2).sum(dim=1))
        off = offset.abs() > self.offset_tol * (1.0 + f.abs())
        lp = torch.where(off, torch.full_like(lp, -math.inf), lp)
        return lp.to(_pair_dtype(x, theta))

    def distance_to_manifold(self, x: Tensor, newton_steps: int = 20) -> Tensor:
        """Euclidean distance to the surface (float64 Gauss-Newton closest point), ``(N,)``.

        Starts from the vertical foot point and runs ``newton_steps`` Gauss-Newton steps on
        ``min_z |Rᵀx - (z, F(z))|``; the result is the distance to an actual surface point and is
        never larger than the vertical ``|offset|``, so it is always an upper bound on the true
        distance and equals it for points near the surface (local minimum).
        """
        xx = self._check_x(x)
        w = xx @ self._rotation(xx.device)
        z = w[:, :2].clone()
        f0, _ = self.height(z)
        vertical = (w[:, 2] - f0).abs()
        eye = torch.eye(2, dtype=torch.float64, device=xx.device)
        for _ in range(newton_steps):
            f, g = self.height(z)
            r_top, r_bot = z - w[:, :2], f - w[:, 2]
            jtj = eye + g.unsqueeze(2) * g.unsqueeze(1)
            jtr = r_top + g * r_bot.unsqueeze(1)
            step = torch.linalg.solve(jtj, jtr.unsqueeze(2)).squeeze(2)
            z = z - step
        f, _ = self.height(z)
        dist = torch.sqrt(((z - w[:, :2]) ** 2).sum(dim=1) + (f - w[:, 2]) ** 2)
        dist = torch.where(torch.isfinite(dist), torch.minimum(dist, vertical), vertical)
        return dist.to(_out_dtype(x))

    def reference_posterior(
        self, x_o: Tensor, num_samples: int, num_grid: int = 2000
    ) -> Tensor:
        """True posterior samples ``(num_samples, 1)`` from a ``num_grid``-cell grid on [-1, 1].

        Uses the exact likelihood of all iid trials in ``x_o (T, 3)`` and inverse-CDF sampling
        with uniform jitter inside each cell (global torch RNG).
        """
        xo = self._check_observations(x_o)
        z, _ = self.chart(xo)
        if not torch.isfinite(self.log_likelihood(xo, self.default_theta.double())).all():
            raise ValueError("x_o contains points off the surface; the likelihood is zero.")

        def log_lik(th: Tensor) -> Tensor:
            sig = self._sigma(th).unsqueeze(1)  # (M, 1)
            mu_v = torch.tensor(_MU_VAR, dtype=torch.float64, device=z.device)
            mu_f = torch.tensor(_MU_FIX, dtype=torch.float64, device=z.device)
            sq_v = ((z - mu_v) ** 2).sum(dim=1).unsqueeze(0)  # (1, T)
            sq_f = ((z - mu_f) ** 2).sum(dim=1).unsqueeze(0)
            lv = math.log(_W_VAR) - 0.5 * sq_v / sig**2 - 2 * torch.log(sig)
            lf = math.log(1 - _W_VAR) - 0.5 * sq_f / _SIGMA_FIX**2 - 2 * math.log(_SIGMA_FIX)
            return torch.logaddexp(lv, lf.expand_as(lv)).sum(dim=1)

        low, high = self._low.to(xo.device), self._high.to(xo.device)
        s = grid_posterior(log_lik, low, high, num_samples, num_grid)
        return s.to(_out_dtype(x_o))
