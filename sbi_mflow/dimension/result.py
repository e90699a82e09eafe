"""The record of a manifold-dimension estimate: the per-n curve, the choice, the reason."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sbi_mflow.dimension.cross_validation import ChartScore

__all__ = ["ManifoldDimEstimate"]


@dataclass(frozen=True)
class ManifoldDimEstimate:
    """What :func:`sbi_mflow.estimate_manifold_dim` found.

    Attributes:
        manifold_dim: the chosen n, or None when the data lie on no manifold below d.
        confirmed: whether the held-out errors reach the noise floor at n (False: n is the
            fast estimate, which the short manifold phases could not confirm).
        reason: why, in words, with the numbers.
        data_dim: d, the dimension of the data's linear span (constant, copied and linearly
            dependent coordinates do not count): the candidates are n < d.
        constant_coordinates: indices of the coordinates that never vary.
        fast_estimate: the intrinsic-dimension estimate the search started from.
        fast_method: the estimator that gave it.
        scores: one :class:`~sbi_mflow.dimension.cross_validation.ChartScore` per
            candidate n trained, in increasing n.
        max_unexplained: the error tolerance the choice used.
        num_rows: rows used (distinct rows, after sub-sampling).
        seconds: wall time of the whole estimate.
    """

    manifold_dim: int | None
    confirmed: bool
    reason: str
    data_dim: int
    constant_coordinates: tuple[int, ...]
    fast_estimate: float
    fast_method: str
    scores: tuple[ChartScore, ...]
    max_unexplained: float
    num_rows: int
    seconds: float
    fast_seconds: float = 0.0

    @property
    def errors(self) -> dict[int, float]:
        """Held-out reconstruction error e(n) per candidate n."""
        return {s.manifold_dim: s.reconstruction for s in self.scores}

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        found = ("none" if self.manifold_dim is None else
                 f"{self.manifold_dim}" + ("" if self.confirmed else " (unconfirmed)"))
        lines = [f"manifold dimension: {found} "
                 f"(d = {self.data_dim}; fast estimate {self.fast_estimate:.2f}, "
                 f"{self.fast_method})", f"  {self.reason}",
                 "      n   held-out error   linear chart   epochs   seconds"]
        for s in self.scores:
            mark = "*" if s.manifold_dim == self.manifold_dim else " "
            lines.append(f"  {mark} {s.manifold_dim:3d}   {s.reconstruction:14.3g}   "
                         f"{s.linear:12.3g}   {s.epochs:6d}   {s.seconds:7.1f}")
        return "\n".join(lines)

    def plot(self, path: str | Path | None = None):
        """Held-out error against n (log scale), the linear chart's beside it, the tolerance,
        the fast estimate and the choice. Returns the matplotlib figure; saved to ``path``
        if given."""
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 4))
        ns = [s.manifold_dim for s in self.scores]
        axis.semilogy(ns, [s.reconstruction for s in self.scores], "o-",
                      label="learned chart (held out)")
        axis.semilogy(ns, [s.linear for s in self.scores], "s--", color="grey",
                      label="linear chart (PCA)")
        axis.axhline(self.max_unexplained, color="tab:red", lw=1, ls=":",
                     label=f"tolerance {self.max_unexplained:g}")
        axis.axvline(self.fast_estimate, color="tab:green", lw=1, ls="-.",
                     label=f"fast estimate {self.fast_estimate:.2f}")
        if self.manifold_dim is not None:
            axis.plot([self.manifold_dim], [self.errors[self.manifold_dim]], "*",
                      ms=16, color="tab:orange", label=f"chosen n = {self.manifold_dim}")
        axis.set_xlabel("manifold dimension n")
        axis.set_ylabel("reconstruction error per coordinate")
        axis.set_xticks(ns)
        axis.set_title("no manifold below d" if self.manifold_dim is None
                       else f"n = {self.manifold_dim} of d = {self.data_dim}"
                       + ("" if self.confirmed else " (unconfirmed)"))
        axis.legend(fontsize=8)
        if path is not None:
            figure.savefig(path, dpi=120, bbox_inches="tight")
        return figure
