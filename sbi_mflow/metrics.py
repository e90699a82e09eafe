"""Evaluation metrics of the M-flow paper (Brehmer & Cranmer 2020, reference protocol §4).

All metrics take torch tensors or numpy arrays and return plain Python floats (or a small
named tuple), so they drop straight into result tables.

- :func:`mmd_squared`: unbiased squared MMD with a Gaussian kernel whose width is the median
  pairwise distance of the *reference* (true-posterior) samples, computed in chunks.
- :func:`mean_distance_to_manifold`: "Man. dist.", mean of min(distance, 10).
- :func:`mean_reconstruction_error`: "Reco err.", mean of min(‖x − x_reco‖, 10).
- :func:`ood_auc` / :func:`ood_auc_from_scores`: "OOD AUC" from the log-likelihood and the
  reconstruction error, each symmetrised as max(AUC, 1 − AUC).
- :func:`c2st`: classifier two-sample test, a seeded wrapper of ``sbi.utils.metrics.c2st``.
- :func:`log_posterior_at_true_theta`: log posterior density at the true θ, from posterior
  samples (Gaussian KDE) or from a posterior with a normalised ``log_prob``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from sbi.utils.metrics import c2st as _sbi_c2st
from scipy.stats import gaussian_kde
from sklearn.metrics import roc_auc_score
from torch import Tensor

__all__ = [
    "OODAUC",
    "c2st",
    "clipped_mean",
    "closure",
    "log_posterior_at_true_theta",
    "mean_distance_to_manifold",
    "mean_reconstruction_error",
    "median_pairwise_distance",
    "mmd_squared",
    "ood_auc",
    "ood_auc_from_scores",
]

ArrayLike = Tensor | np.ndarray

#: Clip value of the paper's tables for distances and reconstruction errors.
DEFAULT_CLIP = 10.0


# ------------------------------------------------------------------------------ input checks
def _as_tensor(values: Any, name: str, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """Convert a tensor / array / sequence to a detached CPU tensor (float64 by default)."""
    if isinstance(values, Tensor):
        tensor = values.detach()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must be a tensor or array of numbers: {error}") from error
    if not (torch.is_floating_point(tensor) or tensor.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got dtype {tensor.dtype}.")
    return tensor.to(dtype=dtype, device="cpu") if dtype is not None else tensor.cpu()


def _check_no_nan(tensor: Tensor, name: str, allow_inf: bool = False) -> None:
    bad = torch.isnan(tensor) if allow_inf else ~torch.isfinite(tensor)
    if bool(bad.any()):
        what = "NaN" if allow_inf else "NaN or infinite"
        raise ValueError(f"{name} contains {int(bad.sum())} {what} value(s).")


def _samples(values: Any, name: str, min_rows: int = 1) -> Tensor:
    """Samples as a finite float64 tensor of shape (N, D); (N,) is promoted to (N, 1)."""
    tensor = _as_tensor(values, name)
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(-1)
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (num_samples, dim), got {tuple(tensor.shape)}.")
    if tensor.shape[0] < min_rows or tensor.shape[1] < 1:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}; it needs at least {min_rows} sample(s) "
            "and one dimension."
        )
    _check_no_nan(tensor, name)
    return tensor


def _scores(values: Any, name: str, allow_inf: bool = False) -> Tensor:
    """Per-point scores as a float64 tensor of shape (N,), N ≥ 1, without NaNs."""
    tensor = _as_tensor(values, name)
    if tensor.dim() == 2 and tensor.shape[-1] == 1:
        tensor = tensor[:, 0]
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise ValueError(f"{name} must have shape (num_points,), got {tuple(tensor.shape)}.")
    _check_no_nan(tensor, name, allow_inf=allow_inf)
    return tensor


def _same_dim(x: Tensor, y: Tensor, x_name: str, y_name: str) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{x_name} has dimension {x.shape[1]} but {y_name} has {y.shape[1]}; they must match."
        )


# ----------------------------------------------------------------------------------------- MMD
def _pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Exact ‖a_i − b_j‖² (no matmul shortcut, so d(x, x) = 0 exactly): (n, D), (m, D) -> (n, m)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()


def median_pairwise_distance(samples: ArrayLike, chunk_size: int = 1024) -> float:
    """Median of ‖x_i − x_j‖₂ over all pairs i < j of ``samples`` (N, D), N ≥ 2.

    This is the median heuristic for the kernel width used by the paper (``scale="ys"``:
    computed on the reference samples only). Memory: the N(N−1)/2 distances are stored
    (100 MB for N = 5000) so the median is exact (numpy's, averaging the middle pair).
    """
    x = _samples(samples, "samples", min_rows=2)
    _check_chunk(chunk_size)
    n = x.shape[0]
    parts = []
    for start in range(0, n - 1, chunk_size):
        block = x[start : start + chunk_size]
        rows = torch.arange(start, start + block.shape[0]).unsqueeze(1)
        dists = _pairwise_sq_dists(block, x).sqrt_()
        parts.append(dists[torch.arange(n).unsqueeze(0) > rows].numpy())
    return float(np.median(np.concatenate(parts)))


def _check_chunk(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")


def _kernel_sum(
    a: Tensor, b: Tensor, gamma: float, exclude_diagonal: bool, chunk_size: int
) -> float:
    """Σ_{i,j} exp(−γ‖a_i − b_j‖²), optionally without the terms i = j (a is b)."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, a.shape[0], chunk_size):
        block = a[start : start + chunk_size]
        kernel = torch.exp(-gamma * _pairwise_sq_dists(block, b))
        if exclude_diagonal:
            local = torch.arange(block.shape[0])
            kernel[local, start + local] = 0.0
        total += kernel.sum()
    return float(total)


def mmd_squared(
    samples: ArrayLike,
    reference_samples: ArrayLike,
    bandwidth: float | None = None,
    chunk_size: int = 1024,
) -> float:
    r"""Unbiased squared maximum mean discrepancy with a Gaussian kernel (the paper's metric).

    With x = ``samples`` (N, D), y = ``reference_samples`` (M, D), N, M ≥ 2,
    k(a, b) = exp(−‖a − b‖² / (2 s²)):

        MMD² = Σ_{i≠j} k(x_i, x_j) / (N(N−1)) + Σ_{i≠j} k(y_i, y_j) / (M(M−1))
               − 2 Σ_{i,j} k(x_i, y_j) / (NM).

    ``bandwidth`` s defaults to the median pairwise distance of the *reference* samples
    (:func:`median_pairwise_distance`), so the argument order matters; pass a float to fix it.
    The estimate is unbiased, hence can be slightly negative when both samples come from the
    same distribution. Computed in float64, ``chunk_size`` rows at a time (5000 × 5000 fits
    easily). Same value as ``sbi.utils.metrics.unbiased_mmd_squared(x, y, scale=s)``, which
    however materialises all pairs and defaults to the median over the pooled samples.
    """
    x = _samples(samples, "samples", min_rows=2)
    y = _samples(reference_samples, "reference_samples", min_rows=2)
    _same_dim(x, y, "samples", "reference_samples")
    _check_chunk(chunk_size)
    if bandwidth is None:
        bandwidth = median_pairwise_distance(y, chunk_size)
        if bandwidth <= 0.0:
            raise ValueError(
                "The median pairwise distance of reference_samples is 0 (more than half the "
                "pairs coincide); pass an explicit positive bandwidth."
            )
    bandwidth = float(bandwidth)
    if not np.isfinite(bandwidth) or bandwidth <= 0.0:
        raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth}.")
    gamma = 0.5 / bandwidth**2
    n, m = x.shape[0], y.shape[0]
    kxx = _kernel_sum(x, x, gamma, True, chunk_size) / (n * (n - 1))
    kyy = _kernel_sum(y, y, gamma, True, chunk_size) / (m * (m - 1))
    kxy = _kernel_sum(x, y, gamma, False, chunk_size) / (n * m)
    return kxx + kyy - 2.0 * kxy


# ------------------------------------------------------------------- distances, reconstruction
def clipped_mean(values: ArrayLike, clip: float = DEFAULT_CLIP) -> float:
    """Mean over points of min(value, clip): values (N,) non-negative (+inf allowed) -> float."""
    v = _scores(values, "values", allow_inf=True)
    if bool((v < 0).any()):
        raise ValueError("values must be non-negative (distances or errors).")
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip}.")
    return float(v.clamp(max=clip).mean())


def _module_dtype_device(obj: Any) -> tuple[torch.dtype | None, torch.device | None]:
    if isinstance(obj, torch.nn.Module):
        for parameter in obj.parameters():
            return parameter.dtype, parameter.device
    return None, None


def _model_input(obj: Any, values: Any, name: str) -> Tensor:
    """Samples (N, D) in the dtype and on the device of ``obj``'s parameters, if it has any."""
    dtype, device = _module_dtype_device(obj)
    x = _samples(values, name)
    if dtype is None and isinstance(values, Tensor) and torch.is_floating_point(values):
        dtype, device = values.dtype, values.device
    return x.to(dtype=dtype or torch.float64, device=device)


def mean_distance_to_manifold(
    samples: ArrayLike,
    simulator: Any | Callable[[Tensor], Tensor],
    clip: float = DEFAULT_CLIP,
) -> float:
    """Man. dist.: mean over samples (N, d) of min(distance to the true manifold, clip).

    ``simulator`` is an object with ``distance_to_manifold(x) -> (N,)`` (our simulators) or
    such a callable itself.
    """
    fn = getattr(simulator, "distance_to_manifold", simulator)
    if not callable(fn):
        raise ValueError("simulator needs a distance_to_manifold(x) method (or be a callable).")
    x = _samples(samples, "samples")
    if isinstance(samples, Tensor) and torch.is_floating_point(samples):
        x = x.to(dtype=samples.dtype, device=samples.device)
    return clipped_mean(fn(x), clip)


@torch.no_grad()
def _reconstruction_errors(
    estimator: Any, x: Tensor, condition: Tensor | None, batch_size: int
) -> Tensor:
    if not callable(getattr(estimator, "reconstruction_error", None)):
        raise ValueError("estimator needs a reconstruction_error(x) method.")
    parts = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        args = () if condition is None else (condition,)
        errors = estimator.reconstruction_error(xb, *args)
        parts.append(_scores(errors, "reconstruction_error", allow_inf=True))
    return torch.cat(parts)


def _condition(theta: Any | None, like: Tensor, name: str = "theta") -> Tensor | None:
    """A single θ (p,) or (1, p) as shape (1, p), with the dtype and device of ``like``."""
    if theta is None:
        return None
    t = _as_tensor(theta, name)
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise ValueError(f"{name} must be one parameter point, shape (p,) or (1, p), "
                         f"got {tuple(t.shape)}.")
    _check_no_nan(t, name)
    return t.to(dtype=like.dtype, device=like.device).unsqueeze(0)


def mean_reconstruction_error(
    samples: ArrayLike,
    estimator: Any,
    clip: float = DEFAULT_CLIP,
    condition: ArrayLike | None = None,
    batch_size: int = 1000,
) -> float:
    """Reco err.: mean over points x (N, d) of min(‖x − g(e(x))‖₂, clip).

    ``estimator`` is any object with ``reconstruction_error(x) -> (B,)`` (e.g.
    :class:`~sbi_mflow.ManifoldFlowEstimator`); ``condition`` θ (p,) is passed on for models
    with a θ-dependent manifold ('pie-conditional'). Runs under ``no_grad`` in batches.
    """
    _check_chunk(batch_size)
    x = _model_input(estimator, samples, "samples")
    errors = _reconstruction_errors(estimator, x, _condition(condition, x), batch_size)
    return clipped_mean(errors, clip)


# --------------------------------------------------------------------------------------- OOD
class OODAUC(NamedTuple):
    """Symmetrised ROC AUCs for telling OOD points from in-distribution points.

    ``likelihood``: from the model log-likelihood; ``reconstruction``: from the reconstruction
    error (None when not available); ``auc``: the larger of the two (the paper's "OOD AUC").
    """

    likelihood: float | None
    reconstruction: float | None
    auc: float


def _symmetric_auc(score_in: Tensor, score_ood: Tensor) -> float:
    """max(AUC, 1 − AUC) of the ROC for labels in = 0, OOD = 1; ±inf ranked at the ends."""
    scores = torch.cat([score_in, score_ood]).numpy().copy()
    finite = np.isfinite(scores)
    if not finite.all():
        low = scores[finite].min() if finite.any() else 0.0
        high = scores[finite].max() if finite.any() else 0.0
        scores[scores == -np.inf] = low - 1.0
        scores[scores == np.inf] = high + 1.0
    labels = np.concatenate([np.zeros(score_in.numel()), np.ones(score_ood.numel())])
    auc = float(roc_auc_score(labels, scores))
    return max(auc, 1.0 - auc)


def ood_auc_from_scores(
    log_prob_in: ArrayLike | None,
    log_prob_ood: ArrayLike | None,
    reco_in: ArrayLike | None = None,
    reco_ood: ArrayLike | None = None,
) -> OODAUC:
    """OOD AUC from precomputed per-point scores: each pair (N_in,), (N_ood,) or both None.

    Each AUC is symmetrised as max(AUC, 1 − AUC), so the direction of the score does not
    matter; 0.5 means indistinguishable, 1 perfectly separated. −inf log-likelihoods (and
    +inf errors) are allowed and rank below (above) every finite value; NaN is an error.
    """
    pairs = {"log_prob": (log_prob_in, log_prob_ood), "reco": (reco_in, reco_ood)}
    results: dict[str, float | None] = {}
    for key, (inside, outside) in pairs.items():
        if (inside is None) != (outside is None):
            raise ValueError(f"Give both {key}_in and {key}_ood, or neither.")
        if inside is None:
            results[key] = None
            continue
        results[key] = _symmetric_auc(
            _scores(inside, f"{key}_in", allow_inf=True),
            _scores(outside, f"{key}_ood", allow_inf=True),
        )
    available = [value for value in results.values() if value is not None]
    if not available:
        raise ValueError("Give at least one pair of scores (log-likelihoods or errors).")
    return OODAUC(results["log_prob"], results["reco"], max(available))


@torch.no_grad()
def _log_likelihoods(estimator: Any, x: Tensor, theta: Tensor | None, batch_size: int) -> Tensor:
    """log p(x_i | θ) with sbi's shape convention: input (n, 1, d), condition (1, p) -> (n,)."""
    if not callable(getattr(estimator, "log_prob", None)):
        raise ValueError("estimator needs a log_prob(input, condition) method.")
    parts = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].unsqueeze(1)
        value = estimator.log_prob(xb) if theta is None else estimator.log_prob(xb, theta)
        if value.numel() != xb.shape[0]:
            raise ValueError(
                f"estimator.log_prob returned shape {tuple(value.shape)} for input "
                f"{tuple(xb.shape)}; expected {xb.shape[0]} values."
            )
        parts.append(_scores(value.reshape(-1), "log_prob", allow_inf=True))
    return torch.cat(parts)


def ood_auc(
    estimator: Any,
    samples_in: ArrayLike,
    samples_ood: ArrayLike,
    theta: ArrayLike | None = None,
    batch_size: int = 100,
    use_reconstruction: bool | None = None,
) -> OODAUC:
    """The paper's "OOD AUC": in-distribution (N, d) versus OOD (M, d) points.

    Scores: the model log-likelihood ``estimator.log_prob(x, condition=θ)`` at one θ (p,)
    (the paper uses θ = 0; None for unconditional models), called with sbi's shapes
    (n, 1, d), (1, p) -> (n, 1); and the reconstruction error ``estimator
    .reconstruction_error(x)`` when the estimator has it (``use_reconstruction=None``) or
    when forced. Returns both symmetrised AUCs and their maximum (:class:`OODAUC`).
    """
    _check_chunk(batch_size)
    x_in = _model_input(estimator, samples_in, "samples_in")
    x_ood = _model_input(estimator, samples_ood, "samples_ood")
    _same_dim(x_in, x_ood, "samples_in", "samples_ood")
    condition = _condition(theta, x_in)
    log_in = _log_likelihoods(estimator, x_in, condition, batch_size)
    log_ood = _log_likelihoods(estimator, x_ood, condition, batch_size)
    if use_reconstruction is None:
        use_reconstruction = callable(getattr(estimator, "reconstruction_error", None))
    reco_in = reco_ood = None
    if use_reconstruction:
        # θ goes to the manifold maps only for a θ-dependent manifold ('pie-conditional').
        conditional_manifold = getattr(estimator, "has_fixed_manifold", True) is False
        manifold_theta = condition if conditional_manifold else None
        reco_in = _reconstruction_errors(estimator, x_in, manifold_theta, batch_size)
        reco_ood = _reconstruction_errors(estimator, x_ood, manifold_theta, batch_size)
    return ood_auc_from_scores(log_in, log_ood, reco_in, reco_ood)


# -------------------------------------------------------------------------------------- C2ST
def c2st(x: ArrayLike, y: ArrayLike, seed: int = 0, **kwargs: Any) -> float:
    """Classifier two-sample test accuracy between x (N, D) and y (M, D): 0.5 same, 1 disjoint.

    A seeded wrapper of ``sbi.utils.metrics.c2st`` (random forest, 5-fold cross-validation,
    z-scored with x's statistics); ``kwargs`` go to it (``classifier="mlp"``, ``n_folds``, ...).
    """
    xs = _samples(x, "x", min_rows=2)
    ys = _samples(y, "y", min_rows=2)
    _same_dim(xs, ys, "x", "y")
    return float(_sbi_c2st(xs.float(), ys.float(), seed=seed, **kwargs))


def closure(model: ArrayLike, simulated: ArrayLike, seed: int = 0, **kwargs: Any) -> float:
    """Closure test of generated samples: how well a classifier tells them from simulations,
    on a scale where 0 is indistinguishable and 1 is the product of the marginals.

        closure = (A(model, S₁) − ½) / (A(shuffled S₂, S₁) − ½),

    with A the classifier two-sample accuracy (:func:`c2st`), S₁ and S₂ the two halves of
    ``simulated`` (N, D), and "shuffled S₂" S₂ with each column permuted independently (a
    sample of the product of the marginal densities). ``model`` (M, D) are samples from the
    model being checked. This is the scale of the paper's Table 3 closure (§4.4: 1 is "a
    random reshuffling of all features across samples"), with a classifier in place of the
    domain-specific tests. ``kwargs`` go to :func:`c2st`.

    Raises:
        ValueError: the classifier cannot tell the shuffled simulations from the simulations
            (independent features), so the scale has no unit.

    References:
        Brehmer & Cranmer (2020), "Flows for simultaneous manifold learning and density
        estimation", §4.4 and Table 3.
    """
    xs = _samples(simulated, "simulated", min_rows=8)
    ms = _samples(model, "model", min_rows=2)
    _same_dim(ms, xs, "model", "simulated")
    generator = torch.Generator().manual_seed(seed)
    rows = xs[torch.randperm(xs.shape[0], generator=generator)]
    first, second = rows[: len(rows) // 2], rows[len(rows) // 2:]
    shuffled = torch.stack([column[torch.randperm(len(column), generator=generator)]
                            for column in second.T], dim=1)
    unit = c2st(shuffled, first, seed=seed, **kwargs) - 0.5
    if unit <= 0.05:
        raise ValueError(
            f"The classifier tells shuffled simulations from simulations with accuracy "
            f"{unit + 0.5:.3f}: the features are (close to) independent, and a closure "
            "relative to the product of the marginals is undefined."
        )
    return (c2st(ms, first, seed=seed, **kwargs) - 0.5) / unit


# ------------------------------------------------------------------- log posterior at true θ
def log_posterior_at_true_theta(
    theta_true: ArrayLike,
    samples: ArrayLike | None = None,
    *,
    posterior: Any | None = None,
    x: Tensor | None = None,
    bw_method: str | float = "scott",
) -> float:
    """log p(θ_true | x_o) from posterior samples (N, p) or from a posterior object.

    With ``samples``: a Gaussian kernel density estimate (``scipy.stats.gaussian_kde``) at
    θ_true (p,). Its kernel covariance is f² · Cov(samples) with Scott's factor
    f = N^(−1/(p+4)) by default (``bw_method``: "scott", "silverman" or a float f), so for
    Gaussian samples the estimate tends to log N(θ_true; mean, (1 + f²) Cov).

    With ``posterior``: ``posterior.log_prob(θ_true[None], x=x)`` (x may be None for a
    posterior with a default x). It must be normalised (e.g. sbi's DirectPosterior);
    MCMC posteriors give unnormalised values, so use their samples instead.
    """
    if (samples is None) == (posterior is None):
        raise ValueError("Give exactly one of samples or posterior.")
    theta = _as_tensor(theta_true, "theta_true")
    if theta.dim() == 2 and theta.shape[0] == 1:
        theta = theta[0]
    if theta.dim() == 0:
        theta = theta.reshape(1)
    if theta.dim() != 1:
        raise ValueError(f"theta_true must have shape (p,) or (1, p), got {tuple(theta.shape)}.")
    _check_no_nan(theta, "theta_true")
    if posterior is not None:
        dtype, device = _module_dtype_device(posterior)
        point = theta.to(dtype=dtype or torch.float32, device=device).unsqueeze(0)
        with torch.no_grad():
            value = posterior.log_prob(point) if x is None else posterior.log_prob(point, x=x)
        return float(_scores(torch.as_tensor(value).reshape(-1), "posterior.log_prob",
                             allow_inf=True)[0])
    s = _samples(samples, "samples", min_rows=2)
    if s.shape[1] != theta.shape[0]:
        raise ValueError(
            f"samples have dimension {s.shape[1]} but theta_true has {theta.shape[0]}."
        )
    data = np.ascontiguousarray(s.numpy().T)
    eigenvalues = np.linalg.eigvalsh(np.atleast_2d(np.cov(data)))
    singular = eigenvalues.max() <= 0.0 or eigenvalues.min() <= 1e-12 * eigenvalues.max()
    try:
        if singular:
            raise np.linalg.LinAlgError(f"covariance eigenvalues {eigenvalues}")
        kde = gaussian_kde(data, bw_method=bw_method)
    except np.linalg.LinAlgError as error:
        raise ValueError(
            "The posterior samples have a singular covariance (collapsed or degenerate "
            f"samples), so no Gaussian KDE exists: {error}"
        ) from error
    return float(kde.logpdf(theta.numpy()[:, None])[0])
