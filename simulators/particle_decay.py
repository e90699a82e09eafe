"""A collider-like cascade decay X → a b, a → 1 2, b → 3 4 with massless final states.

Units: GeV/100 (momenta and masses are O(1)–O(10)). Constants: ``m_a = 0.91``,
``m_b = 1.25``; ``m_X`` Breit-Wigner (Cauchy) with mass 3.0 and width 0.15, truncated to
[2.5, 3.5]; X recoil ``p_x, p_y ~ N(0, 0.5²)``, rapidity ``y_X ~ N(0, 1)``.

Latent phase space (n = 10): ``(p_x, p_y, y_X, m_X)`` plus three unit vectors
``n̂`` (direction of a in the X rest frame), ``u₁`` (direction of particle 1 in the a rest
frame) and ``u₃`` (particle 3 in the b rest frame): 4 + 3·2 = 10 = 4·3 momentum components of
four massless particles minus the two on-shell constraints ``m₁₂ = m_a``, ``m₃₄ = m_b``. The
rest frames are reached by pure (rotation-free) boosts, so all axes are the lab axes.

Squared matrix element (couplings θ ∈ [-1, 1]³), EFT-like: a "standard" amplitude 1 interferes
with three new-physics amplitudes, plus an incoherent background ``b = 0.5``:

    |M|² = (1 + θ·B)² + b,   B = (P₂(n̂_z), (u₁·n̂)(u₃·n̂), u₁·u₃ - (u₁·n̂)(u₃·n̂)),

i.e. a polar asymmetry of the X decay, a polar spin correlation, and the azimuthal correlation
``sin θ_a sin θ_b cos Δφ`` of the two decay planes. ``|M|² ≥ b > 0`` for every θ. Under
isotropic directions the B_k have zero mean and are uncorrelated with variances
``G = diag(1/5, 1/9, 2/9)``, so the normalisation is exact and analytic:
``p(n̂, u₁, u₃ | θ) = |M|² / ((4π)³ Z(θ))``, ``Z(θ) = 1 + b + θᵀ G θ``.

Observed x (d = 40), in this order:

- 0–15: four-momenta ``(E, p_x, p_y, p_z)`` of particles 1, 2, 3, 4;
- 16–19: ``p_T`` of 1–4; 20–23: pseudorapidities η of 1–4;
- 24–25: ``Δη₁₂, Δη₃₄``; 26–27: ``cos Δφ₁₂, cos Δφ₃₄`` (cosines keep the manifold smooth
  where a raw Δφ would wrap around; the azimuths themselves enter only through
  ``p_x/p_T = cos φ`` and ``p_y/p_T = sin φ``);
- 28–30: ``p_T, y, m`` of the X system; 31–34: ``p_T, y`` of a and of b;
- 35–38: invariant masses ``m₁₃, m₁₄, m₂₃, m₂₄``; 39: ``H_T = Σ p_T``.

(``m₁₂`` and ``m₃₄`` are constant and therefore not included.) Optional detector smearing adds
``N(0, smearing² I_40)`` to x, which moves it off the manifold.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._posterior import grid_posterior, nuts_posterior
from .base import ConditionalSimulator, _out_dtype, _pair_dtype, _rand, _randn

__all__ = ["ParticleDecay", "boost"]

M_A, M_B = 0.91, 1.25
M_X, GAMMA_X, M_LO, M_HI = 3.0, 0.15, 2.5, 3.5
PT_SIGMA, Y_SIGMA = 0.5, 1.0
BACKGROUND = 0.5
GRAM = (1.0 / 5.0, 1.0 / 9.0, 2.0 / 9.0)  # E[B_k²] under isotropic directions


FEATURE_NAMES: tuple[str, ...] = (
    *(f"{c}_{i}" for i in range(1, 5) for c in ("E", "px", "py", "pz")),
    *(f"pT_{i}" for i in range(1, 5)),
    *(f"eta_{i}" for i in range(1, 5)),
    "deta_12", "deta_34", "cos_dphi_12", "cos_dphi_34",
    "pT_X", "y_X", "m_X", "pT_a", "y_a", "pT_b", "y_b",
    "m_13", "m_14", "m_23", "m_24", "HT",
)  # fmt: skip


def boost(p: Tensor, beta: Tensor) -> Tensor:
    """Pure Lorentz boost of four-vectors ``p (..., 4)`` by velocity ``beta (..., 3)``.

    A particle at rest goes to velocity ``beta``. Uses ``(γ - 1)/β² = γ²/(1 + γ)`` (no 0/0).
    """
    b2 = (beta**2).sum(-1, keepdim=True)
    gamma = 1.0 / torch.sqrt(1.0 - b2)
    bp = (beta * p[..., 1:]).sum(-1, keepdim=True)
    e = gamma * (p[..., :1] + bp)
    vec = p[..., 1:] + (gamma**2 / (1.0 + gamma) * bp + gamma * p[..., :1]) * beta
    return torch.cat([e, vec], dim=-1)


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def _mass(p: Tensor) -> Tensor:
    return torch.sqrt((p[..., 0] ** 2 - (p[..., 1:] ** 2).sum(-1)).clamp_min(0.0))


def _pt(p: Tensor) -> Tensor:
    return torch.sqrt(p[..., 1] ** 2 + p[..., 2] ** 2)


def _rapidity(p: Tensor) -> Tensor:
    return torch.atanh(p[..., 3] / p[..., 0])


class ParticleDecay(ConditionalSimulator):
    """Cascade decay with three angular couplings θ ∈ [-1, 1]³; d = 40, n = 10, p = 3.

    Latent ``z (N, 13)`` = ``(p_x, p_y, y_X, m_X, n̂, u₁, u₃)`` (float64). ``smearing`` is the
    standard deviation of optional Gaussian noise on x (default 0: x exactly on the manifold).
    ``offset_tol`` (relative, default 1e-3) decides when :meth:`log_likelihood` treats x as off
    the manifold (``-inf``): float32 rounding of energies up to ~50 makes the reconstructed
    latents (e.g. ``m_X² = E² - |p|²``) accurate only to ~1e-4 relative.

    No ``manifold_chart()``: the 13 latents hold three unit vectors (10 free coordinates
    under 3 norm constraints), so :meth:`chart` is not a chart R^10 → R^40, and no single
    chart covers the product of three spheres.
    """

    manifold_dim = 10
    data_dim = 40
    param_dim = 3
    feature_names = FEATURE_NAMES

    def __init__(
        self,
        smearing: float = 0.0,
        offset_tol: float = 1e-3,
        prior_device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(prior_device)
        if smearing < 0:
            raise ValueError(f"smearing must be >= 0, got {smearing}.")
        self.smearing = float(smearing)
        self.offset_tol = offset_tol
        self._low = -torch.ones(3, dtype=torch.float64)
        self._high = torch.ones(3, dtype=torch.float64)

    # ------------------------------------------------------------------ matrix element
    @staticmethod
    def basis(z: Tensor) -> Tensor:
        """Angular basis functions ``B(z) (N, 3)``, each in [-1, 1] (see module docstring)."""
        nh, u1, u3 = z[:, 4:7], z[:, 7:10], z[:, 10:13]
        c1, c3 = (u1 * nh).sum(1), (u3 * nh).sum(1)
        b1 = 1.5 * nh[:, 2] ** 2 - 0.5
        b2 = c1 * c3
        b3 = (u1 * u3).sum(1) - c1 * c3
        return torch.stack([b1, b2, b3], dim=1)

    @staticmethod
    def matrix_element(basis: Tensor, theta: Tensor) -> Tensor:
        """``|M|² = (1 + θ·B)² + b``, shape ``(N,)`` (broadcasts over leading dims)."""
        return (1.0 + (basis * theta).sum(-1)) ** 2 + BACKGROUND

    @staticmethod
    def normaliser(theta: Tensor) -> Tensor:
        """``Z(θ) = E_isotropic[|M|²] = 1 + b + Σ_k G_k θ_k²``, shape ``(N,)``."""
        g = torch.tensor(GRAM, dtype=theta.dtype, device=theta.device)
        return 1.0 + BACKGROUND + (g * theta**2).sum(-1)

    # ------------------------------------------------------------------------ latents
    def _simulate_latent(self, theta: Tensor) -> Tensor:
        n, dev = theta.shape[0], theta.device
        th = theta.cpu()
        pxy = PT_SIGMA * _randn(n, 2)
        y = Y_SIGMA * _randn(n, 1)
        # truncated Cauchy by inverse CDF
        a_lo, a_hi = math.atan((M_LO - M_X) / GAMMA_X), math.atan((M_HI - M_X) / GAMMA_X)
        m = M_X + GAMMA_X * torch.tan(a_lo + (a_hi - a_lo) * _rand(n, 1))
        # directions from |M|² by rejection from isotropic proposals
        dirs = torch.empty(n, 9, dtype=torch.float64)
        bound = (1.0 + th.abs().sum(1)) ** 2 + BACKGROUND  # max of |M|², |B_k| <= 1
        todo = torch.arange(n)
        while todo.numel() > 0:
            k = todo.numel()
            prop = torch.cat([_unit(_randn(k, 3)) for _ in range(3)], dim=1)
            full = torch.cat([torch.zeros(k, 4, dtype=torch.float64), prop], dim=1)
            me = self.matrix_element(self.basis(full), th[todo])
            ok = _rand(k) * bound[todo] < me
            dirs[todo[ok]] = prop[ok]
            todo = todo[~ok]
        return torch.cat([pxy, y, m, dirs], dim=1).to(dev)

    def momenta(self, z: Tensor) -> Tensor:
        """Lab four-momenta ``(N, 4, 4)`` of particles 1–4 for latents ``z (N, 13)``."""
        pxy, y, m = z[:, 0:2], z[:, 2:3], z[:, 3:4]
        nh, u1, u3 = z[:, 4:7], z[:, 7:10], z[:, 10:13]
        e_a = (m**2 + M_A**2 - M_B**2) / (2 * m)
        e_b = (m**2 + M_B**2 - M_A**2) / (2 * m)
        pstar = torch.sqrt(e_a**2 - M_A**2)
        beta_a, beta_b = pstar / e_a * nh, -pstar / e_b * nh

        def pair(u: Tensor, mass: float, beta: Tensor) -> list[Tensor]:
            half = torch.full_like(u[:, :1], mass / 2)
            return [boost(torch.cat([half, s * half * u], 1), beta) for s in (1.0, -1.0)]

        p_rest = pair(u1, M_A, beta_a) + pair(u3, M_B, beta_b)  # in the X rest frame
        mt = torch.sqrt(m**2 + (pxy**2).sum(1, keepdim=True))
        p_x = torch.cat([mt * torch.cosh(y), pxy, mt * torch.sinh(y)], dim=1)
        beta_x = p_x[:, 1:] / p_x[:, :1]
        return torch.stack([boost(p, beta_x) for p in p_rest], dim=1)

    @staticmethod
    def observables(p: Tensor) -> Tensor:
        """The 40 observables (see module docstring) from lab momenta ``p (N, 4, 4)``."""
        pt = _pt(p)  # (N, 4)
        eta = torch.asinh(p[..., 3] / pt)

        def cphi(i: int, j: int) -> Tensor:
            dot = p[:, i, 1] * p[:, j, 1] + p[:, i, 2] * p[:, j, 2]
            return dot / (pt[:, i] * pt[:, j])

        pa, pb = p[:, 0] + p[:, 1], p[:, 2] + p[:, 3]
        px_ = pa + pb
        cols = [
            p.reshape(-1, 16),
            pt,
            eta,
            torch.stack([eta[:, 0] - eta[:, 1], eta[:, 2] - eta[:, 3]], 1),
            torch.stack([cphi(0, 1), cphi(2, 3)], 1),
            torch.stack([_pt(px_), _rapidity(px_), _mass(px_)], 1),
            torch.stack([_pt(pa), _rapidity(pa), _pt(pb), _rapidity(pb)], 1),
            torch.stack([_mass(p[:, i] + p[:, j]) for i, j in ((0, 2), (0, 3), (1, 2), (1, 3))], 1),
            pt.sum(1, keepdim=True),
        ]
        return torch.cat(cols, dim=1)

    def _embed(self, z: Tensor) -> Tensor:
        return self.observables(self.momenta(z))

    def _add_noise(self, x: Tensor) -> Tensor:
        if self.smearing == 0:
            return x
        return x + self.smearing * _randn(*x.shape, device=x.device)

    def chart(self, x: Tensor) -> Tensor:
        """Reconstruct latents ``z (N, 13)`` from the momentum columns of float64 ``x``.

        Exact inverse of the embedding on the manifold. Off the manifold, ``m_X`` is clipped to
        [2.5, 3.5] and velocities to < 1, so that ``g(chart(x))`` is always a manifold point.
        """
        p = x[:, :16].reshape(-1, 4, 4)
        ptot = p.sum(1)
        m = torch.sqrt((ptot[:, 0] ** 2 - (ptot[:, 1:] ** 2).sum(1)).clamp_min(M_LO**2))
        m = m.clamp(M_LO, M_HI)

        def velocity(q: Tensor) -> Tensor:
            v = q[:, 1:] / q[:, :1]
            speed = v.norm(dim=1, keepdim=True)
            return v * (speed.clamp_max(1 - 1e-12) / speed.clamp_min(1e-300))

        beta_x = velocity(ptot)
        rest = boost(p, -beta_x.unsqueeze(1))  # X rest frame
        qa, qb = rest[:, 0] + rest[:, 1], rest[:, 2] + rest[:, 3]
        nh = _unit(qa[:, 1:] - qb[:, 1:])
        u1 = _unit(boost(rest[:, 0], -velocity(qa))[:, 1:])
        u3 = _unit(boost(rest[:, 2], -velocity(qb))[:, 1:])
        y = _rapidity(ptot)
        return torch.cat([ptot[:, 1:3], y.unsqueeze(1), m.unsqueeze(1), nh, u1, u3], dim=1)

    # ------------------------------------------------------------------- densities
    def joint_log_prob(self, z: Tensor, theta: Tensor) -> Tensor:
        """``log p(z|θ)`` w.r.t. ``dp_x dp_y dy dm dΩ(n̂) dΩ(u₁) dΩ(u₃)`` (normalised)."""
        log_dirs = torch.log(self.matrix_element(self.basis(z), theta) / self.normaliser(theta))
        log_dirs = log_dirs - 3 * math.log(4 * math.pi)
        log_gauss = -0.5 * (z[:, 0:2] ** 2).sum(1) / PT_SIGMA**2 - 0.5 * z[:, 2] ** 2 / Y_SIGMA**2
        log_gauss = log_gauss - 1.5 * math.log(2 * math.pi) - 2 * math.log(PT_SIGMA)
        log_gauss = log_gauss - math.log(Y_SIGMA)
        a_lo, a_hi = math.atan((M_LO - M_X) / GAMMA_X), math.atan((M_HI - M_X) / GAMMA_X)
        log_bw = -torch.log1p(((z[:, 3] - M_X) / GAMMA_X) ** 2) - math.log(GAMMA_X * (a_hi - a_lo))
        return log_dirs + log_gauss + log_bw

    def joint_score(self, z: Tensor, theta: Tensor) -> Tensor:
        """``∇θ log p(z|θ) = 2 (1 + θ·B) B / |M|² - 2 G θ / Z(θ)``, shape ``(N, 3)``."""
        b = self.basis(z)
        amp = 1.0 + (b * theta).sum(1, keepdim=True)
        g = torch.tensor(GRAM, dtype=theta.dtype, device=theta.device)
        me = amp**2 + BACKGROUND
        return 2 * amp * b / me - 2 * g * theta / self.normaliser(theta).unsqueeze(1)

    def _require_noise_free(self, what: str) -> None:
        if self.smearing != 0:
            raise NotImplementedError(
                f"{what} is only available without detector smearing (smearing = 0); the "
                "smeared likelihood is an intractable convolution."
            )

    def _offsets(self, xx: Tensor) -> tuple[Tensor, Tensor]:
        z = self.chart(xx)
        dist = (xx - self._embed(z)).norm(dim=1)
        dist = torch.where(torch.isfinite(dist), dist, torch.full_like(dist, math.inf))
        return z, dist

    def log_likelihood(self, x: Tensor, theta: Tensor) -> Tensor:
        """``log p(x|θ)`` up to a θ-independent term, ``(N,)``.

        Returns ``joint_log_prob(chart(x), θ)``: the density in phase-space coordinates. It
        differs from the density w.r.t. the manifold's volume by ``-½ log det(JᵀJ)`` of the
        embedding (θ-independent); the θ-dependent part ``log |M|²`` is exact. ``-inf`` when
        ``x`` is farther than ``offset_tol (1 + ‖x‖)`` from the manifold. Requires
        ``smearing = 0``.
        """
        self._require_noise_free("log_likelihood")
        xx, th = self._broadcast(x, theta)
        z, dist = self._offsets(xx)
        lp = self.joint_log_prob(z, th)
        off = dist > self.offset_tol * (1.0 + xx.norm(dim=1))
        lp = torch.where(off, torch.full_like(lp, -math.inf), lp)
        return lp.to(_pair_dtype(x, theta))

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        """Upper bound on the Euclidean distance: ``‖x - g(chart(x))‖``, ``(N,)``.

        ``g(chart(x))`` is a point on the manifold (the one with the latents reconstructed from
        x's four-momenta), so this is ≥ the true distance, and 0 on the manifold.
        """
        return self._offsets(self._check_x(x))[1].to(_out_dtype(x))

    def reference_posterior(
        self,
        x_o: Tensor,
        num_samples: int,
        method: str = "nuts",
        warmup_steps: int = 300,
        points_per_dim: int = 60,
    ) -> Tensor:
        """True posterior samples ``(num_samples, 3)`` for iid events ``x_o (T, 40)``.

        ``log p(θ | x_o) = Σ_i log|M|²(z_i; θ) - T log Z(θ) + const`` on the box; sampled with
        Pyro NUTS (``method="nuts"``, default) or a ``points_per_dim³`` grid (``"grid"``).
        """
        self._require_noise_free("reference_posterior")
        xo = self._check_observations(x_o)
        z, dist = self._offsets(xo)
        if (dist > self.offset_tol * (1.0 + xo.norm(dim=1))).any():
            raise ValueError("x_o contains events off the manifold; the likelihood is zero.")
        b = self.basis(z)

        num_trials = b.shape[0]

        def log_lik(th: Tensor) -> Tensor:  # th (M, 3) -> (M,)
            me = (1.0 + th @ b.T) ** 2 + BACKGROUND
            return torch.log(me).sum(1) - num_trials * torch.log(self.normaliser(th))

        low, high = self._low.to(xo.device), self._high.to(xo.device)
        if method == "nuts":
            out = nuts_posterior(log_lik, low, high, num_samples, warmup_steps=warmup_steps)
        elif method == "grid":
            out = grid_posterior(log_lik, low, high, num_samples, points_per_dim, chunk=4096)
        else:
            raise ValueError(f"method must be 'nuts' or 'grid', got {method!r}.")
        return out.to(xo.device).to(_out_dtype(x_o))
