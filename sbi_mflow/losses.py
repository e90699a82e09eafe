"""Per-sample loss terms of the training phases, including SCANDAL's score term.

Phases (DESIGN.md):

* ``"manifold"``: reconstruction w · mean_j (x̃_j − x̃'_j)² over the outer flow (and encoder);
* ``"density"``: chart NLL −log p(u | θ) with u = e(x) held fixed, over the inner flow;
* ``"simultaneous"``: both at once (the encoding is detached for the inner flow);
* ``"likelihood"``: −log q(x | θ) of any sbi density estimator (PIE, or sbi's own flows);
* ``"latent"``: the density phase on cached encodings: the input is u = e(x) (B, n).

SCANDAL adds α · ‖∇θ log q(x | θ) − t(x, z | θ)‖² per sample, with ∇θ by autograd w.r.t.
the user's θ (any internal θ-standardisation is handled by the chain rule). Autograd is
enabled here explicitly, so the term also works inside sbi's ``no_grad`` validation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from torch import Tensor

from sbi_mflow.estimator import ManifoldFlowEstimator

__all__ = ["PHASES", "model_score", "phase_losses"]

PHASES = ("manifold", "density", "simultaneous", "likelihood", "latent")


def model_score(
    log_prob: Callable[[Tensor, Tensor], Tensor], x: Tensor, theta: Tensor, create_graph: bool
) -> tuple[Tensor, Tensor]:
    """log q(x|θ) (B,) and its score ∇θ log q(x|θ) (B, p), each sample w.r.t. its own θ."""
    with torch.enable_grad():
        theta = theta.detach().requires_grad_(True)
        values = log_prob(x, theta)
        (score,) = torch.autograd.grad(values.sum(), theta, create_graph=create_graph)
    return values, score


def _log_likelihood_fn(
    estimator: ConditionalDensityEstimator, phase: str
) -> Callable[[Tensor, Tensor], Tensor]:
    if phase == "latent":
        return estimator.latent_log_prob
    if phase == "likelihood" or not isinstance(estimator, ManifoldFlowEstimator):
        return lambda x, theta: estimator.log_prob(x.unsqueeze(0), theta)[0]
    return lambda x, theta: -estimator.density_loss(x, theta)


def phase_losses(
    estimator: ConditionalDensityEstimator,
    phase: str,
    x: Tensor,
    theta: Tensor,
    score: Tensor | None = None,
    scandal_weight: float = 0.0,
) -> dict[str, Tensor]:
    """Loss terms of one phase for a batch, each of shape (B,); ``"total"`` is their sum.

    Keys: ``reconstruction`` (manifold, simultaneous), ``nll`` (density, simultaneous,
    likelihood), ``score_mse`` (when a score is given and ``scandal_weight > 0``; the
    weighted term enters ``total``).
    """
    if phase not in PHASES:
        raise ValueError(f"Unknown phase {phase!r}; choose one of {PHASES}.")
    terms: dict[str, Tensor] = {}
    if phase in ("manifold", "simultaneous"):
        terms["reconstruction"] = estimator.reconstruction_loss(x, theta)
    if phase != "manifold":
        log_likelihood = _log_likelihood_fn(estimator, phase)
        if score is not None and scandal_weight > 0:
            create_graph = torch.is_grad_enabled() and estimator.training
            values, model = model_score(log_likelihood, x, theta, create_graph)
            terms["nll"] = -values
            terms["score_mse"] = (model - score).pow(2).sum(-1)
        else:
            terms["nll"] = -log_likelihood(x, theta)
    total = sum(terms[k] for k in ("reconstruction", "nll") if k in terms)
    if "score_mse" in terms:
        total = total + scandal_weight * terms["score_mse"]
    terms["total"] = total
    return terms
