"""Abstract base class shared by all simulators.

Conventions (all simulators):

- Shapes: ``theta`` is ``(N, p)`` (a single ``(p,)`` vector is accepted where noted), ``x`` is
  ``(N, d)``; outputs are float32 by default (``dtype`` of the input if it is float64), on the
  device of the input. Internal maths runs in float64.
- Randomness: every random number comes from torch's *global CPU* generator (seed it with
  ``torch.manual_seed``), drawn on the CPU in float64 and then moved to the input's device. A
  seed therefore gives the same samples on CPU and CUDA.
- Invalid input (wrong shape, NaN/inf, θ outside the prior's support) raises ``ValueError``
  naming the problem.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = ["Simulator", "ConditionalSimulator"]


def _out_dtype(t: Tensor) -> torch.dtype:
    """float64 stays float64; everything else is returned as float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _pair_dtype(x: Tensor, theta: Tensor) -> torch.dtype:
    """float64 if either input is float64, else float32."""
    f64 = torch.float64
    return f64 if f64 in (x.dtype, getattr(theta, "dtype", None)) else torch.float32


class Simulator(ABC):
    """Interface of a simulator whose data lie on (or near) an ``manifold_dim``-dim manifold.

    Subclasses set ``manifold_dim``, ``data_dim``, ``param_dim`` and implement the methods
    below. Unconditional simulators have ``param_dim == 0`` and ``prior is None``.
    """

    manifold_dim: int
    data_dim: int
    param_dim: int

    @property
    def prior(self) -> Distribution | None:
        """A torch Distribution usable as an sbi prior (None if unconditional)."""
        return None

    @property
    def default_theta(self) -> Tensor:
        """True parameters of the observations, shape ``(param_dim,)``."""
        return torch.zeros(self.param_dim)

    @abstractmethod
    def __call__(self, theta: Tensor) -> Tensor:
        """Simulate ``x`` of shape ``(N, d)`` for ``theta`` of shape ``(N, p)``."""

    @abstractmethod
    def simulate_with_score(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(x, t)``, ``t = ∇θ log p(x, z | θ)`` of shape ``(N, p)`` (exact)."""

    def log_likelihood(self, x: Tensor, theta: Tensor) -> Tensor:
        """True ``log p(x | θ)``, shape ``(N,)``; see the subclass for the normalisation."""
        raise NotImplementedError(f"{type(self).__name__} has no tractable likelihood.")

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        """Euclidean distance (or a documented upper bound) of ``x`` to the manifold, ``(N,)``."""
        raise NotImplementedError(f"{type(self).__name__} has no known manifold distance.")

    def reference_posterior(self, x_o: Tensor, num_samples: int) -> Tensor:
        """Samples ``(num_samples, p)`` from the true posterior given iid ``x_o`` ``(T, d)``."""
        raise NotImplementedError(f"{type(self).__name__} has no reference posterior.")

    # ----------------------------------------------------------------------------- checks
    def _check_x(self, x: Tensor, name: str = "x") -> Tensor:
        """Validate ``x`` of shape ``(N, d)`` (or ``(d,)``, promoted); return float64 copy."""
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(
                f"{name} must have shape (N, {self.data_dim}) for {type(self).__name__}, "
                f"got {tuple(x.shape)}."
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf values.")
        return x.to(torch.float64)


class ConditionalSimulator(Simulator):
    """A simulator with parameters θ in a box ``[low, high]`` and a ``BoxUniform`` prior.

    Subclasses define ``_low``/``_high`` (float64 tensors of shape ``(p,)``) and the
    latent-variable methods ``_simulate_latent``, ``_embed``, ``joint_log_prob`` and
    ``joint_score``; the base class provides checking, batching and ``simulate_with_score``.
    """

    _low: Tensor
    _high: Tensor

    def __init__(self, prior_device: str | torch.device = "cpu") -> None:
        self._prior_device = torch.device(prior_device)

    @property
    def prior(self) -> Distribution:
        from sbi.utils import BoxUniform

        return BoxUniform(
            self._low.float(), self._high.float(), device=str(self._prior_device)
        )

    # ------------------------------------------------------------------ latent interface
    @abstractmethod
    def _simulate_latent(self, theta: Tensor) -> Tensor:
        """Draw latent variables ``z`` (float64, theta's device) for checked float64 theta."""

    @abstractmethod
    def _embed(self, z: Tensor) -> Tensor:
        """Map latents to data ``x`` (float64, noise-free), ``(N, d)``."""

    @abstractmethod
    def joint_log_prob(self, z: Tensor, theta: Tensor) -> Tensor:
        """``log p(z | θ)`` of the latent variables (θ-dependent part exact), ``(N,)``."""

    @abstractmethod
    def joint_score(self, z: Tensor, theta: Tensor) -> Tensor:
        """Analytic ``∇θ log p(z | θ)``, ``(N, p)``."""

    def _add_noise(self, x: Tensor) -> Tensor:
        """Optional off-manifold noise (none by default)."""
        return x

    # -------------------------------------------------------------------- public methods
    def simulate_with_latent(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(x, z)``: data (float32 unless theta is float64) and float64 latents."""
        th = self._check_theta(theta)
        z = self._simulate_latent(th)
        x = self._add_noise(self._embed(z))
        return x.to(_out_dtype(theta)), z

    def __call__(self, theta: Tensor) -> Tensor:
        return self.simulate_with_latent(theta)[0]

    def simulate_with_score(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        th = self._check_theta(theta)
        z = self._simulate_latent(th)
        x = self._add_noise(self._embed(z))
        t = self.joint_score(z, th)
        return x.to(_out_dtype(theta)), t.to(_out_dtype(theta))

    # ----------------------------------------------------------------------------- checks
    def _check_theta(self, theta: Tensor, allow_vector: bool = False) -> Tensor:
        """Validate θ: shape ``(N, p)`` (or ``(p,)`` if allowed), finite, inside the prior box."""
        name = type(self).__name__
        if not isinstance(theta, Tensor):
            raise ValueError(f"theta must be a torch.Tensor, got {type(theta).__name__}.")
        if theta.dim() == 1 and allow_vector:
            theta = theta.unsqueeze(0)
        if theta.dim() != 2 or theta.shape[1] != self.param_dim:
            raise ValueError(
                f"theta must have shape (N, {self.param_dim}) for {name}, got {tuple(theta.shape)}."
            )
        if not torch.isfinite(theta).all():
            raise ValueError("theta contains NaN or inf values.")
        th = theta.to(torch.float64)
        low, high = self._low.to(th.device), self._high.to(th.device)
        # float32 rounding of the box edges is tolerated
        tol = 1e-6 * (high - low)
        outside = ((th < low - tol) | (th > high + tol)).any(dim=1)
        if outside.any():
            bad = theta[outside][0].tolist()
            raise ValueError(
                f"theta outside the prior's support [{self._low.tolist()}, {self._high.tolist()}]"
                f" for {name}: {int(outside.sum())} row(s), e.g. {bad}."
            )
        return torch.minimum(torch.maximum(th, low), high)

    def _broadcast(self, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Check and broadcast ``x (N, d)`` with ``theta (N, p)`` or ``(p,)``; float64."""
        xx = self._check_x(x)
        th = self._check_theta(theta, allow_vector=True).to(xx.device)
        if th.shape[0] == 1 and xx.shape[0] != 1:
            th = th.expand(xx.shape[0], -1)
        elif xx.shape[0] == 1 and th.shape[0] != 1:
            xx = xx.expand(th.shape[0], -1)
        if th.shape[0] != xx.shape[0]:
            raise ValueError(
                f"x has {xx.shape[0]} rows but theta has {th.shape[0]}; "
                "they must match or one must be a single row."
            )
        return xx, th

    def _check_observations(self, x_o: Tensor) -> Tensor:
        return self._check_x(x_o, name="x_o")


def _randn(*shape: int, device: torch.device | str = "cpu") -> Tensor:
    """Standard normal draws from the global CPU RNG (float64), moved to ``device``."""
    return torch.randn(*shape, dtype=torch.float64).to(device)


def _rand(*shape: int, device: torch.device | str = "cpu") -> Tensor:
    """Uniform [0, 1) draws from the global CPU RNG (float64), moved to ``device``."""
    return torch.rand(*shape, dtype=torch.float64).to(device)
