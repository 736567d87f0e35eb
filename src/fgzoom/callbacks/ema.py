"""EMA of the weights (``model.ema.decay``): Lightning's ``EMAWeightAveraging`` with timm's decay warm-up.

What is evaluated: the averaged weights *replace* the raw ones wherever the model is evaluated. During
``fit`` the validation epochs run on the EMA weights, so ``val/acc`` and the best checkpoint
(``val/acc``) are the EMA's; every checkpoint's ``state_dict`` holds the EMA weights (the raw ones, the
averaging state and the update counter sit beside them for resuming), so ``eval.py``, ``predict.py``,
``save_model.py`` and ``export.py`` all use the EMA weights without knowing about it. ``train/*`` metrics
are of the raw weights, which are the ones the optimizer moves.

Resuming (``ckpt_path=last``) restores the raw weights, the average and its update count from the
checkpoint, so the run continues exactly (Lightning's callback state).

Averaged: every parameter and floating-point buffer (BatchNorm running statistics, the center-loss
centers), as timm's ``ModelEmaV3`` does; integer buffers (``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from fgzoom.errors import ConfigError

# timm's ModelEmaV3 warm-up: decay_t = 1 - (1 + t / WARMUP_GAMMA) ** -WARMUP_POWER, capped at ``decay``
WARMUP_GAMMA, WARMUP_POWER = 1.0, 2.0 / 3.0


def ema_decay(decay: float, update: int, warmup: bool = True) -> float:
    """The decay of the ``update``-th averaging step (1-based): ``decay``, or with ``warmup`` timm's ramp
    ``min(decay, 1 - (1 + update) ** -2/3)`` (0.37 at the first update, 0.95 at 100, 0.99 at 1000), so a
    short run's average is not dominated by the random initial weights."""
    if not warmup:
        return decay
    return min(decay, 1.0 - (1.0 + update / WARMUP_GAMMA) ** -WARMUP_POWER)


def ema_multi_avg_fn(decay: float, warmup: bool = True) -> Callable[[Sequence[Tensor], Sequence[Tensor], Tensor], None]:
    """An ``AveragedModel`` ``multi_avg_fn``: lerp the averaged tensors towards the current ones by
    ``1 - ema_decay(decay, n + 1, warmup)``; ``n`` is how many updates the average has had."""

    @torch.no_grad()
    def update(averaged: Sequence[Tensor], current: Sequence[Tensor], num_averaged: Tensor) -> None:
        d = ema_decay(decay, int(num_averaged) + 1, warmup)
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(list(averaged), list(current), 1.0 - d)
        else:  # integer buffers (num_batches_tracked): the current count
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


class EMA(WeightAveraging):
    """Exponential moving average of the LightningModule's parameters and buffers, updated after every
    optimizer step, evaluated in place of the raw weights (see the module docstring).

    Args:
        decay: the EMA decay per update, in (0, 1); e.g. 0.999 for a few thousand steps, 0.9998 for long runs.
        warmup: ramp the decay up from 0 as timm does (``ema_decay``).
    """

    def __init__(self, decay: float, warmup: bool = True) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise ConfigError(f"model.ema.decay={decay}: must be in (0, 1), e.g. 0.999; null switches EMA off")
        if warmup not in (True, False):
            raise ConfigError(f"model.ema.warmup={warmup!r}: must be true or false")
        super().__init__(use_buffers=True, multi_avg_fn=ema_multi_avg_fn(float(decay), warmup))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():  # our configure_model only compiles in place; nothing is sharded
            warnings.filterwarnings("ignore", message=".*overrides the configure_model.*")
            super().setup(trainer, pl_module, stage)

    @staticmethod
    def _fitting(trainer: L.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING

    # Lightning swaps the average in for every validation epoch while it exists, also in a trainer.validate
    # after fit, where the weights loaded from the checkpoint are already the EMA's: swap during fit only.
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_end(trainer, pl_module)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """During fit: restore the raw weights and the average (resume). Outside fit (validate, test,
        predict): nothing, the checkpoint's ``state_dict`` already holds the EMA weights."""
        if self._fitting(trainer) and self._average_model is not None:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
