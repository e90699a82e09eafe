"""Early stopping on a validation loss that restores a real copy of the best weights."""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["EarlyStopping", "state_copy"]


def state_copy(module: nn.Module) -> dict[str, Tensor]:
    """A copy of the state dict (not views of the live parameters)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class EarlyStopping:
    """Keeps the best weights on the validation loss; stops after ``patience`` epochs
    without improvement."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_loss = math.inf
        self.best_state: dict[str, Tensor] | None = None
        self.epochs_since_improvement = 0

    @property
    def stopped(self) -> bool:
        return self.epochs_since_improvement >= self.patience

    def update(self, loss: float, module: nn.Module) -> bool:
        """Record a validation loss; returns whether it improved on the best."""
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = state_copy(module)
            self.epochs_since_improvement = 0
            return True
        self.epochs_since_improvement += 1
        return False

    def restart(self, patience: int) -> None:
        """Continue (resume training): keep the best so far, reset the patience counter."""
        self.patience = patience
        self.epochs_since_improvement = 0

    def restore(self, module: nn.Module) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)
