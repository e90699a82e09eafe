"""A fast intrinsic-dimension estimate of the data, from scikit-dimension.

The estimator is Levina & Bickel's maximum-likelihood estimate (``skdim.id.MLE``): for
each point, with T_k its distance to the k-th nearest neighbour,

    m̂(x) = [ (1/(k−1)) Σ_{j<k} log(T_k(x) / T_j(x)) ]⁻¹,

averaged over points. It was chosen over TwoNN (``skdim.id.TwoNN``), which uses only the
first two neighbours: with Gaussian off-manifold noise of 1 % of the data's spread, TwoNN
read 4.4 on lifted two moons (n = 2 in R³²), where MLE read 2.35, because at 10⁴ points
the nearest-neighbour distance of a 2-manifold is about the noise; and over the method of
moments (``skdim.id.MOM``), which read 11.0–11.5 on the package's n = 10 tasks. MLE was
within 0.35 of the true n on every simulator of the package, with and without that noise,
in under half a second at 10⁴ × 64 (``python benchmarks/manifold_dim.py --compare-fast``).

References:
    Levina, Bickel. Maximum likelihood estimation of intrinsic dimension. NeurIPS 2004.
    Bac, Mirkes, Gorban, Tyukin, Zinovyev. Scikit-dimension: a Python package for
    intrinsic dimension estimation. Entropy 23 (2021).
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["FAST_METHOD", "fast_dimension", "prepare_rows"]

#: What :func:`fast_dimension` runs, as recorded in results.
FAST_METHOD = "skdim.id.MLE (Levina-Bickel), 20 neighbours"
_NEIGHBOURS = 20


def prepare_rows(x: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Distinct rows, standardised per coordinate, at most ``max_rows`` of them (float64).

    Repeated rows (a simulator that returns cached points, as the Lorenz attractor's
    sampler does) have zero neighbour distances, for which the estimate is log 0; they
    carry no information on the dimension and are dropped. Constant coordinates carry
    none either and are dropped.
    """
    rows = np.unique(np.asarray(x, dtype=np.float64), axis=0)
    if rows.shape[0] > max_rows:
        rng = np.random.default_rng(seed)
        rows = rows[np.sort(rng.choice(rows.shape[0], max_rows, replace=False))]
    std = rows.std(0)
    varying = std > 0
    return (rows[:, varying] - rows[:, varying].mean(0)) / std[varying]


def fast_dimension(rows: np.ndarray) -> float:
    """Levina–Bickel MLE of the intrinsic dimension of ``rows`` (N, d), N > 20."""
    estimator = _skdim().id.MLE()
    estimator.fit(rows, n_neighbors=_NEIGHBOURS)
    return float(estimator.dimension_)


def _skdim():
    """scikit-dimension, imported on first use (numba's start-up costs seconds) inside
    ``catch_warnings``: one of its modules (``skdim.id._FisherS``) calls
    ``warnings.filterwarnings("ignore")`` on import, which would otherwise silence every
    warning of the process, ours included."""
    with warnings.catch_warnings():
        import skdim
    return skdim
