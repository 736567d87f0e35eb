"""Checkpoint selection on the validation split: the best epoch, and on a tie the later one."""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor


class LatestBestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose top-k prefers the later epoch when the monitored value ties.

    Lightning keeps the earliest of equal values (a strict comparison). Validation accuracy moves in steps
    of one image, so near convergence consecutive epochs often tie; the later one has trained longer and,
    under a decaying schedule, at a lower learning rate, so it is the better pick (measured: on
    ``mnist_clutter`` a strict comparison kept epoch 3 of 5 at equal val/acc).
    """

    def check_monitor_top_k(self, trainer: Trainer, current: Tensor | None = None) -> bool:
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        at_least_as_good = {"min": torch.le, "max": torch.ge}[self.mode]
        decision = at_least_as_good(current, self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(bool(decision))
