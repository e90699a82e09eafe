"""Which candidate n the held-out reconstruction errors choose.

With e(n) the held-out error of a chart of dimension n (mean squared, per standardised
coordinate: the fraction of each coordinate's variance the chart leaves off its manifold),
data on an n*-dimensional manifold with off-manifold noise σ (per standardised coordinate)
give

    e(n) ≈ σ² (d − n) / d        for n ≥ n*   (only noise is left: the curve is flat),
    e(n) ≫ σ²                    for n < n*   (a whole manifold direction is missing),

so the curve has a knee at n*, and its height there is the noise floor of the data. The
rule takes the smallest n at which

* e(n) ≤ ``max_unexplained`` (default 1 %: the off-manifold residual is at most 10 % of
  each coordinate's spread), and
* the curve is flat from there: e(n + 1) ≥ e(n) / ``min_gain`` (one more dimension does not
  divide the error by ``min_gain`` = 10 or more), or e(n) ≤ ``resolution`` (1e-4, an RMS of
  1 % of the spread: below what a short manifold phase resolves).

Full-rank data are all "noise": e(n) ≈ (d − n)/d never reaches 1 %, and no n < d is
chosen.

Candidates start at n̂ = round(m̂), the fast estimate (:mod:`sbi_mflow.dimension.fast`), and
an answer above n̂ + ``max_above_fast`` (default 1) is never taken: a short manifold phase
fits a strongly curved manifold worse than a long one, and a few spare latent dimensions
let it cut corners, so the curve can keep falling above the true n (tutorial 05's surface,
n = 2 in R⁵: e = 0.071, 0.0049, 7.5e-5 at n = 2, 3, 4, where MLE read 2.06). MLE was within
0.35 of the true n on every data set measured (n ≤ 10); its known downward bias grows with n
(10.2 of 10 at ParticleDecay, but 36 for full-rank Gaussian data in R⁶⁴).

When no allowed n reaches the floor, n̂ is taken *unconfirmed* if it is clearly below d
(m̂ ≤ d − ``fast_margin``) and the learned chart at n̂ leaves at most ``max_chart_ratio``
(1/2) of what the best linear n̂-dimensional chart leaves: the data are curved around an
n̂-manifold that a short phase does not fit, not spread over R^d. Measured: 17 % on tutorial
05's surface, 21–26 % on ParticleDecay (n = 10 in R⁴⁰ with three 2-spheres of decay
directions, which no single chart R¹⁰ covers; the chart leaves 7–9 %), 30–31 % on the lifted
gaussian_linear (n = 10 in R⁶⁴); full-rank data: 35–42 % at n = d − 1 in R¹⁰ (which the
fast margin excludes), and near 100 % when d − n is large (benchmarks/manifold_dim.py).
Otherwise the answer is "no manifold below d". Measured curves are in docs/benchmarks.md
(benchmarks/manifold_dim.py).

References:
    Brehmer, Cranmer. Flows for simultaneous manifold learning and density estimation.
    NeurIPS 2020, section 3 ("the manifold dimension n … can be determined through
    cross-validation based on the reconstruction error").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DimensionSearchConfig", "choose", "next_candidate", "start_candidate"]


@dataclass(frozen=True)
class DimensionSearchConfig:
    """Settings of :func:`sbi_mflow.estimate_manifold_dim`.

    Attributes:
        steps: gradient steps of the manifold phase per candidate n, as whole epochs over
            the training rows (750: 10 epochs of 10⁴ rows at batch 100, the budget the
            measured curves used; early stopping on held-out rows).
        max_unexplained: largest held-out error e(n) (fraction of the standardised
            variance) the chosen n may leave.
        min_gain: a further dimension is needed when it divides e(n) by at least this.
        resolution: errors below this count as on the manifold, whatever the gain.
        max_candidates: most candidate n trained (the search starts at the fast
            estimate and walks until the rule decides).
        max_above_fast: the answer is at most round(fast estimate) + this.
        fast_margin: an unconfirmed fast estimate must lie this far below d.
        max_chart_ratio: ... and the chart at round(m̂) must leave at most this fraction of
            the linear chart's error.
        max_rows: at most this many rows are used (a random subset of them).
        validation_fraction: share of the rows held out for the errors.
    """

    steps: int = 750
    max_unexplained: float = 1e-2
    min_gain: float = 10.0
    resolution: float = 1e-4
    max_candidates: int = 5
    max_above_fast: int = 1
    fast_margin: float = 1.5
    max_chart_ratio: float = 0.5
    max_rows: int = 10_000
    validation_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.steps < 1 or self.max_candidates < 1 or self.max_rows < 40:
            raise ValueError("steps and max_candidates must be >= 1, max_rows >= 40.")
        if not 0 < self.resolution <= self.max_unexplained < 1:
            raise ValueError("Need 0 < resolution <= max_unexplained < 1.")
        if self.min_gain <= 1:
            raise ValueError("min_gain must be > 1.")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in (0, 1).")

    def epochs(self, train_rows: int, batch_size: int) -> int:
        """Whole epochs over ``train_rows`` that give at least ``steps`` steps."""
        return max(1, math.ceil(self.steps / math.ceil(train_rows / batch_size)))


def _accepts(errors: Mapping[int, float], n: int, data_dim: int,
             config: DimensionSearchConfig) -> bool | None:
    """Whether the rule takes n; None while e(n + 1) is needed and unknown."""
    if errors[n] > config.max_unexplained:
        return False
    if errors[n] <= config.resolution or n + 1 >= data_dim:
        return True
    if n + 1 not in errors:
        return None
    return errors[n + 1] >= errors[n] / config.min_gain


def start_candidate(fast_estimate: float, data_dim: int) -> int:
    """n̂ = round(m̂), kept within 1 … d − 1: the first candidate trained."""
    return min(max(int(round(fast_estimate)), 1), data_dim - 1)


def _answers(errors: Mapping[int, float], data_dim: int, fast_estimate: float,
             config: DimensionSearchConfig) -> list[int]:
    """The candidates tried that may be the answer (at most n̂ + max_above_fast), in order."""
    cap = start_candidate(fast_estimate, data_dim) + config.max_above_fast
    return [n for n in sorted(errors) if n <= cap]


def choose(errors: Mapping[int, float], linear: Mapping[int, float], data_dim: int,
           fast_estimate: float, config: DimensionSearchConfig
           ) -> tuple[int | None, bool, str]:
    """(n, confirmed, reason): the chosen n (None: no manifold below d), whether the held-out
    errors confirm it, and why — decided when :func:`next_candidate` asks for nothing more.

    ``errors`` and ``linear``: e(n) of the learned and of the linear chart per n tried.
    """
    for n in _answers(errors, data_dim, fast_estimate, config):
        if _accepts(errors, n, data_dim, config):
            gain = (f"; e({n + 1}) = {errors[n + 1]:.3g}, one more dimension gains less than "
                    f"{config.min_gain:g}x" if n + 1 in errors else "")
            below = (f"e({n - 1}) = {errors[n - 1]:.3g} > {config.max_unexplained:g}"
                     if n - 1 in errors and errors[n - 1] > config.max_unexplained
                     else f"e({n - 1}) = {errors[n - 1]:.3g}, the curve still falls"
                     if n - 1 in errors else "n = 1 is the smallest" if n == 1
                     else f"n = {n - 1} was not tried: max_candidates reached")
            return n, True, (f"held-out reconstruction error e({n}) = {errors[n]:.3g} is at "
                             f"the noise floor ({below}{gain})")
    guess = start_candidate(fast_estimate, data_dim)
    ratio = errors[guess] / linear[guess] if linear.get(guess, 0) > 0 else float("inf")
    tried = ", ".join(f"e({n}) = {errors[n]:.3g}" for n in sorted(errors))
    if fast_estimate <= data_dim - config.fast_margin and ratio <= config.max_chart_ratio:
        return guess, False, (
            f"unconfirmed: the fast estimate {fast_estimate:.2f} is far below d = {data_dim} "
            f"and the chart at n = {guess} leaves {100 * ratio:.0f}% of what the best linear "
            f"chart leaves, but no n up to {guess + config.max_above_fast} reaches the noise "
            f"floor ({config.max_unexplained:g}) in a short manifold phase ({tried}): the data "
            "are curved around a manifold that a short phase does not fit (slow convergence, "
            "or a manifold no single chart covers); check the manifold check after training")
    return None, False, (
        f"no manifold below d = {data_dim}: no n reaches the noise floor "
        f"({config.max_unexplained:g}; {tried}), and the chart at n = {guess} leaves "
        f"{100 * ratio:.0f}% of what a linear chart leaves (full-rank data, or noise as "
        "large as the signal)")


def next_candidate(errors: Mapping[int, float], data_dim: int, fast_estimate: float,
                   config: DimensionSearchConfig) -> int | None:
    """The next n to train, or None when :func:`choose` can decide.

    Walks down while the smallest candidate tried is accepted (a smaller n may be too),
    fills in e(n + 1) where the flatness test needs it, and walks up while nothing is
    accepted, to n̂ + ``max_above_fast`` at most; stops at ``max_candidates`` or when n
    would reach d.
    """
    if len(errors) >= config.max_candidates:
        return None
    answers = _answers(errors, data_dim, fast_estimate, config)
    for n in answers:
        verdict = _accepts(errors, n, data_dim, config)
        if verdict is None:
            return n + 1
        if verdict:
            lowest = answers[0]
            return lowest - 1 if n == lowest and lowest > 1 else None
    top = answers[-1]
    cap = start_candidate(fast_estimate, data_dim) + config.max_above_fast
    return top + 1 if top + 1 < data_dim and top + 1 <= cap else None
