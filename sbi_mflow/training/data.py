"""Training data held on the training device, batched by index without host round trips."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

__all__ = ["Batch", "TrainingData"]

#: (θ (B, p), x (B, d) — or cached encodings u (B, n) —, score (B, p) or None)
Batch = tuple[Tensor, Tensor, Tensor | None]


@dataclass
class TrainingData:
    """θ, x and the optional joint score, with the train / validation split, on one device.

    Training batches have a fixed size (the last, incomplete batch of a shuffled epoch is
    dropped), so a compiled or graph-captured step sees one shape.
    """

    theta: Tensor
    x: Tensor
    score: Tensor | None
    train_indices: Tensor
    val_indices: Tensor

    @classmethod
    def on_device(cls, theta: Tensor, x: Tensor, score: Tensor | None, train_indices: Tensor,
                  val_indices: Tensor, device: torch.device) -> TrainingData:
        def move(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.to(device)

        return cls(move(theta), move(x), move(score), move(train_indices), move(val_indices))

    def with_inputs(self, inputs: Tensor) -> TrainingData:
        """The same split and θ with x replaced (e.g. by cached encodings u = e(x))."""
        return replace(self, x=inputs)

    @property
    def num_train(self) -> int:
        return self.train_indices.numel()

    def _select(self, index: Tensor) -> Batch:
        score = None if self.score is None else self.score[index]
        return self.theta[index], self.x[index], score

    def train_batches(self, batch_size: int) -> Iterator[Batch]:
        """Shuffled batches of exactly ``min(batch_size, num_train)`` rows."""
        indices = self.train_indices
        indices = indices[torch.randperm(indices.numel(), device=indices.device)]
        size = min(batch_size, indices.numel())
        for begin in range(0, indices.numel() - size + 1, size):
            yield self._select(indices[begin : begin + size])

    def validation_batches(self, batch_size: int) -> Iterator[Batch]:
        """All validation rows in order, in batches of at most ``batch_size``."""
        for index in self.val_indices.split(batch_size):
            yield self._select(index)
