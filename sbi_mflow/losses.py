"""Training losses: per-sample terms of the M/D phases, PIE, and SCANDAL's score term.

Each loss is an object with ``terms(estimator, x, θ, score=None) -> {name: (B,)}`` whose
``"total"`` entry is what is minimised (its batch mean), and ``__call__(estimator, x, θ)
-> (B,)`` for sbi's ``estimator.loss``:

* :class:`ReconstructionLoss` (manifold phase): w · mean_j (x̃_j − x̃'_j)², x̃ = standardised
  x, x' = g(e(x)) its projection (Brehmer & Cranmer 2020, eq. 8);
* :class:`ChartNLL` (density phase): −log p(u | θ) with u = e(x) held fixed (no gradient to
  the chart or the encoder);
* :class:`LatentNLL`: the same on cached encodings, the input being u (B, n) itself;
* :class:`NegativeLogLikelihood`: −log q(x | θ) of any sbi density estimator (PIE, or sbi's
  own flows);
* :class:`SimultaneousLoss`: reconstruction + chart NLL, for plain ``sbi`` training.

:func:`training_loss` is the one rule that picks the loss of plain (simultaneous) training
from an estimator's parts; ``estimator.loss`` and the simultaneous schedule both use it.

Likelihood losses take ``scandal_weight`` α: with a joint score t(x, z | θ) they add
α · ‖∇θ log q(x | θ) − t‖² per sample (SCANDAL; Brehmer et al. 2018), with ∇θ by autograd
w.r.t. the user's θ, so any internal θ-standardisation is handled by the chain rule.
Autograd is enabled here explicitly, so the term also works inside ``no_grad`` validation.

References:
    Brehmer, Cranmer. Flows for simultaneous manifold learning and density estimation.
    NeurIPS 2020.
    Brehmer, Louppe, Pavez, Cranmer. Mining gold from implicit models to improve
    likelihood-free inference. PNAS 2020 (SCANDAL).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from torch import Tensor

__all__ = [
    "ChartNLL",
    "LatentNLL",
    "LikelihoodLoss",
    "NegativeLogLikelihood",
    "ReconstructionLoss",
    "SimultaneousLoss",
    "model_score",
    "training_loss",
]

Terms = dict[str, Tensor]


def model_score(
    log_prob: Callable[[Tensor, Tensor], Tensor], x: Tensor, theta: Tensor, create_graph: bool
) -> tuple[Tensor, Tensor]:
    """log q(x|θ) (B,) and its score ∇θ log q(x|θ) (B, p), each sample w.r.t. its own θ."""
    with torch.enable_grad():
        theta = theta.detach().requires_grad_(True)
        values = log_prob(x, theta)
        (score,) = torch.autograd.grad(values.sum(), theta, create_graph=create_graph)
    return values, score


class Loss:
    """Per-sample loss terms; ``"total"`` is minimised."""

    def terms(self, estimator: ConditionalDensityEstimator, x: Tensor, theta: Tensor | None,
              score: Tensor | None = None) -> Terms:
        raise NotImplementedError

    def __call__(self, estimator: ConditionalDensityEstimator, x: Tensor,
                 theta: Tensor | None) -> Tensor:
        return self.terms(estimator, x, theta)["total"]


class ReconstructionLoss(Loss):
    """w · mean over coordinates of the squared standardised reconstruction error (B,)."""

    def __init__(self, weight: float) -> None:
        self.weight = float(weight)

    def terms(self, estimator, x, theta, score=None) -> Terms:
        chart = estimator.chart
        projected = estimator.project_unchecked(x, theta)
        error = (chart.standardized(x) - chart.standardized(projected)).pow(2).mean(-1)
        value = self.weight * error
        return {"reconstruction": value, "total": value}


class LikelihoodLoss(Loss):
    """−log q(x | θ), plus SCANDAL's α ‖∇θ log q − t‖² when a score t is given and α > 0."""

    def __init__(self, scandal_weight: float = 0.0) -> None:
        if scandal_weight < 0:
            raise ValueError(f"scandal_weight must be >= 0, got {scandal_weight}.")
        self.scandal_weight = float(scandal_weight)

    def log_likelihood(self, estimator, x: Tensor, theta: Tensor | None) -> Tensor:
        raise NotImplementedError

    def terms(self, estimator, x, theta, score=None) -> Terms:
        def log_likelihood(points: Tensor, parameters: Tensor | None) -> Tensor:
            return self.log_likelihood(estimator, points, parameters)

        if score is None or self.scandal_weight == 0.0:
            nll = -log_likelihood(x, theta)
            return {"nll": nll, "total": nll}
        create_graph = torch.is_grad_enabled() and estimator.training
        values, model = model_score(log_likelihood, x, theta, create_graph)
        score_mse = (model - score).pow(2).sum(-1)
        return {"nll": -values, "score_mse": score_mse,
                "total": -values + self.scandal_weight * score_mse}


class ChartNLL(LikelihoodLoss):
    """−log p(u | θ), u = e(x) held fixed: trains the inner flow only."""

    def log_likelihood(self, estimator, x, theta) -> Tensor:
        u = estimator.encode_point(x, theta).u.detach()
        return estimator.latent_log_prob(u, theta)


class LatentNLL(LikelihoodLoss):
    """−log p(u | θ) on cached encodings: the input x *is* u (B, n)."""

    def log_likelihood(self, estimator, x, theta) -> Tensor:
        return estimator.latent_log_prob(x, theta)


class NegativeLogLikelihood(LikelihoodLoss):
    """−log q(x | θ) of any sbi conditional density estimator (sbi shapes)."""

    def log_likelihood(self, estimator, x, theta) -> Tensor:
        return estimator.log_prob(x.unsqueeze(0), theta)[0]


class SimultaneousLoss(Loss):
    """Reconstruction + chart NLL (the encoding detached for the inner flow)."""

    def __init__(self, reconstruction_weight: float, scandal_weight: float = 0.0) -> None:
        self.reconstruction = ReconstructionLoss(reconstruction_weight)
        self.likelihood = ChartNLL(scandal_weight)

    def terms(self, estimator, x, theta, score=None) -> Terms:
        terms = self.reconstruction.terms(estimator, x, theta)
        likelihood = self.likelihood.terms(estimator, x, theta, score)
        total = terms["total"] + likelihood.pop("total")
        return {**terms, **likelihood, "total": total}


def training_loss(estimator: ConditionalDensityEstimator, scandal_weight: float = 0.0) -> Loss:
    """The loss of plain (simultaneous) training, from the estimator's volume term.

    * density on the manifold (M-flow, Me-flow): reconstruction + chart NLL
      (:class:`SimultaneousLoss`), or the chart NLL alone when the chart has nothing to
      learn (a prescribed chart: there the reconstruction error is a constant and the
      chart NLL differs from −log q by a parameter-free term);
    * otherwise (PIE, sbi's own estimators): −log q(x | θ).
    """
    volume = getattr(estimator, "volume", None)
    if volume is None or not volume.on_manifold:
        return NegativeLogLikelihood(scandal_weight)
    if not estimator.learns_manifold:
        return ChartNLL(scandal_weight)
    return SimultaneousLoss(estimator.config.reconstruction_weight, scandal_weight)
