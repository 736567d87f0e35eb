"""Learning-rate schedule: linear warmup then cosine decay, stepped per optimizer update (timm)."""

from __future__ import annotations

from timm.scheduler import CosineLRScheduler
from torch.optim import Optimizer


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_epochs: float = 1.0,
    steps_per_epoch: int = 1,
    warmup_lr_init: float = 1e-6,
    min_lr_ratio: float = 0.01,
) -> CosineLRScheduler:
    """timm's CosineLRScheduler over ``total_steps`` updates with ``warmup_epochs`` of linear warmup.

    The LightningModule calls ``step_update(global_step)`` after every optimizer step.
    """
    base_lr = optimizer.param_groups[0]["lr"]
    warmup = int(round(warmup_epochs * steps_per_epoch))
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps),
        lr_min=base_lr * min_lr_ratio,
        warmup_t=min(warmup, max(0, total_steps - 1)),
        warmup_lr_init=warmup_lr_init,
        warmup_prefix=False,
        t_in_epochs=False,
    )
