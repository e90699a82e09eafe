"""Conditional von Mises-Fisher distribution on the unit sphere S^n ⊂ R^{n+1} ⊆ R^d.

A corrected, well-defined version of the paper's "conditional spherical Gaussian". The paper
puts Gaussians on the hyperspherical angles; that density has the wrong normalisation in the
reference code and, done right, is singular at the poles (the angle Jacobian vanishes there).
We use instead the von Mises-Fisher (vMF) density w.r.t. the sphere's surface measure,

    p(y | θ) = C_{n+1}(κ) exp(κ μᵀy),   C_p(κ) = κ^{p/2-1} / ((2π)^{p/2} I_{p/2-1}(κ)),

which is smooth, integrates to exactly 1 over S^n and has the paper's θ-dependence:

- width ``σ(θ₀) = 0.1π + (0.5 + 0.5 θ₀) 0.3π ∈ [0.1π, 0.4π]``, concentration ``κ = 1/σ²``;
- azimuthal centre ``c(θ₁) = π/2 + (0.5 + 0.5 θ₁) π ∈ [π/2, 3π/2]``: the mean direction
  ``μ = (0, …, 0, cos c, sin c)`` is the point with all polar angles π/2 and azimuth c.

Data: ``x = (y, 0_{d-n-1}) + ε ξ`` with ``ξ ~ N(0, I_d)``; ``ε = 0`` (default) puts x exactly
on the sphere.

Chart: one chart cannot cover a sphere. :meth:`ConditionalSphere.manifold_chart` gives the
stereographic projection from the pole p = e_{n-1} (:class:`StereographicSphereChart`), which
covers S^n without p. Every mean direction has μᵀp = cos c ≤ 0, so p lies opposite the bulk
of the data (its density is at most that at 90° from the mean; a data point is p with
probability zero).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._posterior import grid_posterior
from .base import ConditionalSimulator, _out_dtype, _pair_dtype, _rand, _randn

__all__ = [
    "ConditionalSphere",
    "StereographicSphereChart",
    "angles_to_sphere",
    "log_bessel_iv",
    "sphere_to_angles",
]


def log_bessel_iv(nu: float, kappa: Tensor, terms: int | None = None) -> Tensor:
    """``log I_ν(κ)`` (modified Bessel function of the first kind) by its power series.

    ``I_ν(κ) = Σ_m (κ/2)^{2m+ν} / (m! Γ(m+ν+1))``, summed in log space in float64. The terms
    peak at ``m ≈ κ/2`` and then decay faster than geometrically, so ``max κ + 40`` terms (the
    default) give full float64 accuracy; verified against scipy for ``κ ≤ 60``.
    """
    k = kappa.to(torch.float64)
    if terms is None:
        terms = int(k.max().item()) + 40 if k.numel() else 1
    m = torch.arange(terms, dtype=torch.float64, device=kappa.device)
    logt = (2 * m + nu) * torch.log(k.unsqueeze(-1) / 2) - torch.lgamma(m + 1)
    logt = logt - torch.lgamma(m + nu + 1)
    return torch.logsumexp(logt, dim=-1)


def angles_to_sphere(phi: Tensor) -> Tensor:
    """Hyperspherical chart: angles ``(N, n)`` -> points ``(N, n+1)`` on the unit sphere.

    ``φ_0..φ_{n-2} ∈ [0, π]`` polar, ``φ_{n-1} ∈ [0, 2π)`` azimuth; ``y_0 = cos φ_0``,
    ``y_k = (Π_{j<k} sin φ_j) cos φ_k``, ``y_n = Π_{j<n} sin φ_j``.
    """
    n = phi.shape[1]
    sines = torch.cumprod(torch.sin(phi), dim=1)
    prefix = torch.cat([torch.ones_like(phi[:, :1]), sines[:, :-1]], dim=1)
    return torch.cat([prefix * torch.cos(phi), sines[:, n - 1 : n]], dim=1)


def sphere_to_angles(y: Tensor) -> Tensor:
    """Inverse of :func:`angles_to_sphere` for points ``(N, n+1)`` (normalised internally)."""
    n = y.shape[1] - 1
    y = y / y.norm(dim=1, keepdim=True)
    tail = torch.sqrt(torch.flip(torch.cumsum(torch.flip(y**2, [1]), 1), [1]))  # ‖y_{k:}‖
    phis = [torch.atan2(tail[:, k + 1], y[:, k]) for k in range(n - 1)]
    phis.append(torch.remainder(torch.atan2(y[:, n], y[:, n - 1]), 2 * math.pi))
    return torch.stack(phis, dim=1)


class StereographicSphereChart(nn.Module):
    """Stereographic chart of the unit sphere S^n ⊂ R^{n+1} ⊆ R^d from the pole p = e_{n-1}.

    With y ∈ S^n, y_p = y_{n-1} its pole coordinate and y_r ∈ R^n the other n coordinates
    (in order), ``encode`` is u = y_r / (1 − y_p) and ``decode`` its inverse
    y_r = 2u / (1 + |u|²), y_p = (|u|² − 1) / (|u|² + 1), padded with d − n − 1 zeros. It
    covers S^n except p itself (|u| → ∞ there); J_gᵀJ_g = (2 / (1 + |u|²))² I_n (conformal).
    Off the sphere ``encode`` first projects onto it (y = x_{:n+1} / ‖x_{:n+1}‖), so
    ``decode(encode(x))`` is the closest point of the sphere. Computes in the input's dtype;
    satisfies ``sbi_mflow.PrescribedChart`` (registered there as "conditional-sphere").
    """

    def __init__(self, manifold_dim: int = 2, data_dim: int = 3) -> None:
        super().__init__()
        if manifold_dim < 1 or data_dim < manifold_dim + 1:
            raise ValueError(
                f"need manifold_dim >= 1 and data_dim >= manifold_dim + 1, got "
                f"manifold_dim={manifold_dim}, data_dim={data_dim}."
            )
        self.manifold_dim = manifold_dim
        self.data_dim = data_dim

    @property
    def options(self) -> dict:
        return {"manifold_dim": self.manifold_dim, "data_dim": self.data_dim}

    def decode(self, u: Tensor) -> Tensor:
        """Point on the sphere (B, d) of u (B, n)."""
        n = self.manifold_dim
        square = u.pow(2).sum(1, keepdim=True)
        rest = 2.0 * u / (1.0 + square)
        pole = (square - 1.0) / (square + 1.0)
        pad = u.new_zeros(u.shape[0], self.data_dim - n - 1)
        return torch.cat([rest[:, : n - 1], pole, rest[:, n - 1 :], pad], dim=1)

    def encode(self, x: Tensor) -> Tensor:
        """u (B, n) of x (B, d), projected onto the sphere first."""
        n = self.manifold_dim
        y = x[:, : n + 1]
        y = y / y.norm(dim=1, keepdim=True)
        rest = torch.cat([y[:, : n - 1], y[:, n:]], dim=1)
        return rest / (1.0 - y[:, n - 1 : n])


class ConditionalSphere(ConditionalSimulator):
    """Conditional vMF on S^n (``manifold_dim = n``) embedded in R^d, θ ∈ [-1, 1]².

    Latent ``z = y`` (the point on the sphere, ``(N, n+1)``); the noise is θ-independent, so
    the joint score is ``∇θ log p(y|θ)``. ``offset_tol`` (default 1e-4) is the distance to the
    sphere above which :meth:`log_likelihood` returns ``-inf``.
    """

    param_dim = 2

    def __init__(
        self,
        manifold_dim: int = 2,
        data_dim: int = 3,
        epsilon: float = 0.0,
        offset_tol: float = 1e-4,
        prior_device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(prior_device)
        if manifold_dim < 1 or data_dim < manifold_dim + 1:
            raise ValueError(
                f"need manifold_dim >= 1 and data_dim >= manifold_dim + 1, got "
                f"manifold_dim={manifold_dim}, data_dim={data_dim}."
            )
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
        self.manifold_dim = manifold_dim
        self.data_dim = data_dim
        self.epsilon = float(epsilon)
        self.offset_tol = offset_tol
        self._low = torch.tensor([-1.0, -1.0], dtype=torch.float64)
        self._high = torch.tensor([1.0, 1.0], dtype=torch.float64)

    # --------------------------------------------------------------------- parameters
    @staticmethod
    def _sigma(theta: Tensor) -> Tensor:
        return 0.1 * math.pi + (0.5 + 0.5 * theta[:, 0]) * 0.3 * math.pi

    @classmethod
    def concentration(cls, theta: Tensor) -> Tensor:
        """``κ(θ) = σ(θ₀)^{-2}``, shape ``(N,)``."""
        return cls._sigma(theta) ** -2

    def mean_direction(self, theta: Tensor) -> Tensor:
        """``μ(θ) = (0, …, 0, cos c, sin c)``, shape ``(N, n+1)``."""
        c = 0.5 * math.pi + (0.5 + 0.5 * theta[:, 1]) * math.pi
        mu = torch.zeros(theta.shape[0], self.manifold_dim + 1, dtype=theta.dtype,
                         device=theta.device)  # fmt: skip
        mu[:, -2], mu[:, -1] = torch.cos(c), torch.sin(c)
        return mu

    def log_normaliser(self, kappa: Tensor) -> Tensor:
        """``log C_p(κ)`` with ``p = n + 1``."""
        p = self.manifold_dim + 1
        nu = p / 2 - 1
        return nu * torch.log(kappa) - (p / 2) * math.log(2 * math.pi) - log_bessel_iv(nu, kappa)

    def mean_resultant_length(self, kappa: Tensor) -> Tensor:
        """``A_p(κ) = I_{p/2}(κ) / I_{p/2-1}(κ) = E[μᵀy] = -d log C_p / dκ``."""
        nu = (self.manifold_dim + 1) / 2 - 1
        return torch.exp(log_bessel_iv(nu + 1, kappa) - log_bessel_iv(nu, kappa))

    # ------------------------------------------------------------------------ latents
    def _simulate_latent(self, theta: Tensor) -> Tensor:
        """Wood's (1994) rejection sampler for vMF, vectorised; global CPU RNG."""
        n_s, dev = theta.shape[0], theta.device
        p = self.manifold_dim + 1
        kappa = self.concentration(theta).cpu()
        b = (-2 * kappa + torch.sqrt(4 * kappa**2 + (p - 1) ** 2)) / (p - 1)
        x0 = (1 - b) / (1 + b)
        cst = kappa * x0 + (p - 1) * torch.log(1 - x0**2)
        w = torch.empty(n_s, dtype=torch.float64)
        todo = torch.arange(n_s)
        beta = torch.distributions.Beta(
            torch.tensor((p - 1) / 2, dtype=torch.float64),
            torch.tensor((p - 1) / 2, dtype=torch.float64),
        )
        while todo.numel() > 0:
            zb = beta.sample((todo.numel(),))
            u = _rand(todo.numel())
            bb, kk, xx = b[todo], kappa[todo], x0[todo]
            ww = (1 - (1 + bb) * zb) / (1 - (1 - bb) * zb)
            ok = kk * ww + (p - 1) * torch.log(1 - xx * ww) - cst[todo] >= torch.log(u)
            w[todo[ok]] = ww[ok]
            todo = todo[~ok]
        v = _randn(n_s, p)
        mu = self.mean_direction(theta.cpu())
        v = v - (v * mu).sum(1, keepdim=True) * mu
        v = v / v.norm(dim=1, keepdim=True)
        y = w.unsqueeze(1) * mu + torch.sqrt((1 - w**2).clamp_min(0)).unsqueeze(1) * v
        return y.to(dev)

    def _embed(self, z: Tensor) -> Tensor:
        pad = self.data_dim - self.manifold_dim - 1
        return torch.cat([z, z.new_zeros(z.shape[0], pad)], dim=1)

    def manifold_chart(self) -> StereographicSphereChart:
        """The stereographic chart from the pole opposite the bulk of the data (module
        docstring), for ``sbi_mflow.manifold_likelihood_nn("fom", chart=...)``."""
        return StereographicSphereChart(self.manifold_dim, self.data_dim)

    def _add_noise(self, x: Tensor) -> Tensor:
        if self.epsilon == 0:
            return x
        return x + self.epsilon * _randn(*x.shape, device=x.device)

    def joint_log_prob(self, z: Tensor, theta: Tensor) -> Tensor:
        """``log p(y|θ) = log C_p(κ) + κ μᵀy`` w.r.t. the surface measure (normalised)."""
        kappa = self.concentration(theta)
        return self.log_normaliser(kappa) + kappa * (self.mean_direction(theta) * z).sum(1)

    def joint_score(self, z: Tensor, theta: Tensor) -> Tensor:
        """``∂θ₀ = (μᵀy - A_p(κ)) dκ/dθ₀``, ``∂θ₁ = κ (dμ/dc)ᵀy · π/2``; shape ``(N, 2)``."""
        sig = self._sigma(theta)
        kappa = sig**-2
        mu = self.mean_direction(theta)
        dkappa = -2 * sig**-3 * 0.15 * math.pi
        t0 = ((mu * z).sum(1) - self.mean_resultant_length(kappa)) * dkappa
        dmu_y = -mu[:, -1] * z[:, -2] + mu[:, -2] * z[:, -1]  # (dμ/dc)ᵀ y
        t1 = kappa * dmu_y * 0.5 * math.pi
        return torch.stack([t0, t1], dim=1)

    # --------------------------------------------------------------------- likelihood
    def _require_noise_free(self, what: str) -> None:
        if self.epsilon != 0:
            raise NotImplementedError(
                f"{what} is only available for epsilon = 0 (data exactly on the sphere); the "
                "likelihood of noisy data is a convolution that is not implemented."
            )

    def log_likelihood(self, x: Tensor, theta: Tensor) -> Tensor:
        """Normalised vMF density w.r.t. the sphere's surface measure, ``(N,)``.

        ``-inf`` for points farther than ``offset_tol`` from the sphere. Requires ε = 0.
        Broadcasts ``x (N, d)`` with ``theta (N, 2)`` or ``(2,)``; differentiable in θ.
        """
        self._require_noise_free("log_likelihood")
        xx, th = self._broadcast(x, theta)
        y = xx[:, : self.manifold_dim + 1]
        lp = self.joint_log_prob(y / y.norm(dim=1, keepdim=True), th)
        off = self._distance(xx) > self.offset_tol
        lp = torch.where(off, torch.full_like(lp, -math.inf), lp)
        return lp.to(_pair_dtype(x, theta))

    def _distance(self, xx: Tensor) -> Tensor:
        k = self.manifold_dim + 1
        radial = xx[:, :k].norm(dim=1) - 1
        return torch.sqrt(radial**2 + (xx[:, k:] ** 2).sum(dim=1))

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        """Exact Euclidean distance ``sqrt((‖x_{:n+1}‖ - 1)² + ‖x_{n+1:}‖²)``, ``(N,)``."""
        return self._distance(self._check_x(x)).to(_out_dtype(x))

    def reference_posterior(
        self, x_o: Tensor, num_samples: int, points_per_dim: int = 300
    ) -> Tensor:
        """True posterior samples ``(num_samples, 2)`` on a ``points_per_dim²`` grid.

        The likelihood of ``T`` iid trials only depends on ``S = Σ_i y_i``:
        ``T log C_p(κ) + κ μᵀS``. Cells drawn by inverse CDF, uniform jitter inside a cell.
        """
        self._require_noise_free("reference_posterior")
        xo = self._check_observations(x_o)
        if (self._distance(xo) > self.offset_tol).any():
            raise ValueError("x_o contains points off the sphere; the likelihood is zero.")
        y = xo[:, : self.manifold_dim + 1]
        s = (y / y.norm(dim=1, keepdim=True)).sum(0)
        num_trials = xo.shape[0]

        def log_lik(th: Tensor) -> Tensor:
            kappa = self.concentration(th)
            return num_trials * self.log_normaliser(kappa) + kappa * (
                self.mean_direction(th) @ s
            )

        low, high = self._low.to(xo.device), self._high.to(xo.device)
        out = grid_posterior(log_lik, low, high, num_samples, points_per_dim)
        return out.to(_out_dtype(x_o))
