"""A likelihood-ratio estimator trained with the simulator's joint score: sbi's NRE-C plus a
score-regression term (the ratio analogue of SCANDAL; ALICES and CASCAL in the literature).

sbi's NRE-C classifier learns log r(x, θ) = log p(x|θ) − log p(x) in its logits. Its θ-gradient
is the likelihood score ∇_θ log p(x|θ), whose conditional expectation the simulator's joint
score t(x, z|θ) = ∇_θ log p(x, z|θ) is (Brehmer et al. 2020, "Mining gold from implicit
models"). So, with the weight α,

    L = L_NRE-C + α · E_{(θ, x, t) ~ joint} ‖∇_θ log r̂(x, θ) − t‖²,

and the second term is minimised by the true ratio's score. sbi runs validation under
``no_grad``; there the score term is left out, so early stopping watches the classification
loss.

References:
    Miller, Weniger & Forré (2022), "Contrastive Neural Ratio Estimation".
    Brehmer, Louppe, Pavez & Cranmer (2020), "Mining gold from implicit models to improve
    likelihood-free inference", PNAS 117 (ALICES, CASCAL, SCANDAL).
    Brehmer & Cranmer (2020), "Flows for simultaneous manifold learning and density
    estimation", Table 3 (the ALICES baseline).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from sbi.inference import NRE_C
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from sbi.neural_nets.ratio_estimators import RatioEstimator
from torch import Tensor
from torch.utils import data

__all__ = ["RatioLikelihood", "ScoreAugmentedNRE", "score_regression"]


def score_regression(net: Callable[[Tensor, Tensor], Tensor], theta: Tensor, x: Tensor,
                     score: Tensor) -> Tensor:
    """‖∇_θ net(θ, x) − t‖² per pair: θ (B, p), x (B, ...), t (B, p) → (B,).

    ``net`` returns log-ratio logits (B,) or (B, 1); the gradient keeps its graph, so the
    result can be trained on."""
    theta = theta.detach().requires_grad_(True)
    logits = net(theta, x).reshape(-1)
    (gradient,) = torch.autograd.grad(logits.sum(), theta, create_graph=True)
    return (gradient - score).pow(2).sum(-1)


class ScoreAugmentedNRE(NRE_C):
    """sbi's NRE-C with the joint score's regression term (module docstring).

    Takes NRE-C's arguments plus ``score_weight`` (α, default 1); ``append_simulations``
    takes the joint scores t (N, p) beside θ and x (required when α > 0). Everything else —
    training options, ``build_posterior``, multi-round use — is NRE-C's.
    """

    def __init__(self, *args: Any, score_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not score_weight >= 0.0:
            raise ValueError(f"score_weight must be >= 0, got {score_weight!r}.")
        self.score_weight = float(score_weight)
        self._scores: list[tuple[int, Tensor | None]] = []  # (round, t) per append

    def append_simulations(self, theta: Tensor, x: Tensor, score: Tensor | None = None,
                           **kwargs: Any) -> ScoreAugmentedNRE:
        """θ (N, p), x (N, ...), and the joint scores ∇_θ log p(x, z|θ) (N, p)."""
        if score is None and self.score_weight > 0:
            raise ValueError("score_weight > 0 needs the joint scores: append_simulations("
                             "theta, x, score=...).")
        if score is not None:
            score = torch.as_tensor(score, dtype=torch.as_tensor(theta).dtype)
            if score.shape != torch.as_tensor(theta).shape:
                raise ValueError(f"score must have theta's shape {tuple(theta.shape)}, got "
                                 f"{tuple(score.shape)}.")
            if not torch.isfinite(score).all():
                raise ValueError("score contains NaN or infinite values.")
        super().append_simulations(theta, x, **kwargs)
        self._scores.append((int(kwargs.get("from_round", 0)), score))
        return self

    def get_dataloaders(self, starting_round: int = 0, *args: Any, **kwargs: Any):
        """sbi's loaders (its split and batching) over (θ, x, prior mask, t)."""
        train_loader, val_loader = super().get_dataloaders(starting_round, *args, **kwargs)
        kept = [s for r, s in self._scores if r >= starting_round]
        if self.score_weight == 0 or any(s is None for s in kept):
            return train_loader, val_loader
        theta, x, prior_masks = train_loader.dataset.tensors
        dataset = data.TensorDataset(theta, x, prior_masks, torch.cat(kept).to(theta.device))
        return tuple(data.DataLoader(dataset, batch_size=loader.batch_size,
                                     drop_last=loader.drop_last, sampler=loader.sampler,
                                     num_workers=loader.num_workers,
                                     pin_memory=loader.pin_memory)
                     for loader in (train_loader, val_loader))

    def _get_losses(self, batch, loss_args):
        losses = super()._get_losses(batch, loss_args)
        if len(batch) < 4 or not torch.is_grad_enabled():  # validation: NRE-C's loss only
            return losses
        theta, x, score = (t.to(self._device) for t in (batch[0], batch[1], batch[3]))
        return losses + self.score_weight * score_regression(self._neural_net, theta, x, score)


class RatioLikelihood(ConditionalDensityEstimator):
    """An sbi ratio estimator's log r̂(x, θ) as a likelihood in θ for posterior sampling.

    log p(x|θ) = log r(x, θ) + log p(x), and the second term does not depend on θ, so
    ``sbi_mflow.nuts_posterior(RatioLikelihood(ratio), prior)`` samples the ratio
    estimator's posterior π(θ) Π_t r̂(x_t, θ) with the batched NUTS sampler (sbi samples it
    with ``NRE.build_posterior``). ``log_prob`` is unnormalised in x; ``sample`` and ``loss``
    are not available.

    Args:
        ratio: a trained sbi ``RatioEstimator`` (``NRE_*.train()`` returns one).
    """

    def __init__(self, ratio: RatioEstimator) -> None:
        if not isinstance(ratio, RatioEstimator):
            raise TypeError(f"ratio must be an sbi RatioEstimator, got {type(ratio).__name__}.")
        super().__init__(ratio, input_shape=ratio.condition_shape,
                         condition_shape=ratio.input_shape)

    def log_prob(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """log r̂(x, θ): x (S, B, d) or (B, d), θ (B, p) → (S, B) or (B,)."""
        x = input if input.dim() == 3 else input.unsqueeze(0)
        theta = condition.expand(x.shape[0], *condition.shape)
        logits = self.net(theta.reshape(-1, theta.shape[-1]), x.reshape(-1, x.shape[-1]))
        logits = logits.reshape(x.shape[:2])
        return logits if input.dim() == 3 else logits[0]

    def loss(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        raise NotImplementedError("Train the ratio estimator with sbi's NRE.")

    def sample(self, sample_shape: torch.Size, condition: Tensor, **kwargs: Any) -> Tensor:
        raise NotImplementedError("A ratio estimator cannot generate x.")
