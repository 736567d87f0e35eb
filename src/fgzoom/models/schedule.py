"""Learning-rate schedules, stepped per optimizer update: timm's warmup + cosine, or torch's one-cycle.

Both keep each parameter group's ``lr_scale`` (the new layers' ``lr_mult_new``, layer decay): timm's scheduler
multiplies it into every lr it sets; ``one_cycle`` gives each group ``lr * lr_scale`` as its peak.
"""

from __future__ import annotations

from timm.scheduler import CosineLRScheduler
from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR

from fgzoom.errors import ConfigError
from fgzoom.models.optim import apply_lr_scale


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


class OneCycle(OneCycleLR):
    """torch's OneCycleLR whose plan follows the run's config on resume: ``load_state_dict`` restores the step
    count and keeps this run's total steps and phases, so a run resumed with a larger ``trainer.max_epochs``
    anneals over the new total (a resume with the same config continues exactly)."""

    PLAN = ("total_steps", "_schedule_phases")

    def load_state_dict(self, state_dict: dict) -> None:
        plan = {key: getattr(self, key) for key in self.PLAN}
        super().load_state_dict(state_dict)
        self.__dict__.update(plan)


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int = 1,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> OneCycle:
    """torch's OneCycleLR over ``total_steps`` updates, each group peaking at its ``lr * lr_scale``.

    The LightningModule calls ``step()`` after every optimizer step. ``steps_per_epoch`` is accepted for the
    common factory signature and unused.
    """
    if not 0.0 < pct_start < 1.0:
        raise ConfigError(f"model.scheduler.pct_start={pct_start}: must be in (0, 1), the warm-up's share of training")
    if cycle_momentum and not {"momentum", "betas"} & set(optimizer.defaults):
        raise ConfigError(f"model.scheduler.cycle_momentum=true: {type(optimizer).__name__} has no momentum or beta1 "
                          "to cycle; set model.scheduler.cycle_momentum=false")
    apply_lr_scale(optimizer)  # torch's scheduler ignores lr_scale: each group's own lr is its peak
    return OneCycle(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=max(2, total_steps),
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=cycle_momentum,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
    )
