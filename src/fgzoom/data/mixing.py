"""Mixup / CutMix of training batches (``data.mixup.*``): timm's ``Mixup``, seeded from the batch itself.

A mixed batch keeps its keys and gains ``target`` Tensor[B, K] float32, the mixed one-hot labels; its
``label`` becomes each image's dominant class (``target.argmax``), which the center and ranking losses and
the ``train/*`` accuracies use. The cross-entropy terms train on ``target``, label smoothing
(``model.label_smoothing``) applied by the loss as for hard labels, which gives exactly timm's smoothed
mixup targets.

For the zoom model: the attention, and therefore the box, is computed on the mixed image (for CutMix the
pasted patch competes for the crop); boxes of mixed images are not scored (boxes are scored on val and
test only, which are never mixed).

Randomness: timm draws lambda and the CutMix box from numpy's global generator; each batch draws them
under a seed derived from (run seed, epoch, the batch's first sample index, rank) and restores the
generator after, so a resumed run mixes every batch as the uninterrupted one did (see ``fgzoom.data.seeding``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from timm.data import Mixup

from fgzoom.errors import ConfigError

MODES = ("batch", "pair", "elem")


@dataclass(frozen=True)
class MixupConfig:
    """``data.mixup``: timm ``Mixup`` arguments (label smoothing excluded: ``model.label_smoothing``).

    Attributes:
        mixup_alpha: Beta(alpha, alpha) of the mixup ratio; 0 = no mixup.
        cutmix_alpha: Beta(alpha, alpha) of the CutMix area; 0 = no CutMix.
        cutmix_minmax: [min, max] CutMix box side as a fraction of the image, instead of ``cutmix_alpha``.
        prob: probability that a batch (or element, or pair) is mixed at all.
        switch_prob: with both alphas > 0, probability of CutMix instead of mixup.
        mode: ``batch`` (one lambda per batch), ``pair`` (per pair of images) or ``elem`` (per image).
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cutmix_minmax: tuple[float, float] | None = None
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"

    def __post_init__(self) -> None:
        for key in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.mixup.{key}={getattr(self, key)}: must be >= 0 (0 switches it off)")
        for key in ("prob", "switch_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"data.mixup.{key}={getattr(self, key)}: must be a probability in [0, 1]")
        if self.mode not in MODES:
            raise ConfigError(f"data.mixup.mode={self.mode!r}: must be one of {', '.join(MODES)}")
        if self.cutmix_minmax is not None and not (
            len(self.cutmix_minmax) == 2 and 0.0 < self.cutmix_minmax[0] <= self.cutmix_minmax[1] <= 1.0
        ):
            raise ConfigError(f"data.mixup.cutmix_minmax={list(self.cutmix_minmax)}: must be [min, max] with "
                              "0 < min <= max <= 1, or null")

    @property
    def active(self) -> bool:
        """Whether any batch can be mixed."""
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.cutmix_minmax is not None)

    @classmethod
    def from_options(cls, options: Mapping | None) -> MixupConfig | None:
        """``data.mixup`` (a mapping or None) -> the config, or None when nothing is mixed."""
        if options is None:
            return None
        valid = cls.__dataclass_fields__
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(f"data.mixup.{unknown[0]}: unknown key; valid: {', '.join(valid)}")
        values = dict(options)
        if values.get("cutmix_minmax") is not None:
            values["cutmix_minmax"] = tuple(float(v) for v in values["cutmix_minmax"])
        config = cls(**values)
        return config if config.active else None


class BatchMixing:
    """Mix one training batch with timm's ``Mixup`` (see the module docstring).

    Args:
        config: what to mix.
        num_classes: K, the width of ``target``.
    """

    def __init__(self, config: MixupConfig, num_classes: int) -> None:
        self.config = config
        self.num_classes = num_classes
        self.mixup = Mixup(
            mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha,
            cutmix_minmax=list(config.cutmix_minmax) if config.cutmix_minmax else None, prob=config.prob,
            switch_prob=config.switch_prob, mode=config.mode, label_smoothing=0.0, num_classes=num_classes,
        )

    def __call__(self, batch: dict, seed: int) -> dict:
        """batch ``image`` Tensor[B, 3, H, W], ``label`` Tensor[B] -> a new dict with the images mixed,
        ``target`` Tensor[B, K] float32 and ``label`` its argmax. timm mixes pairs, so with an odd B the
        last image stays as it is (its one-hot target)."""
        images, labels = batch["image"], batch["label"]
        even = images.shape[0] - images.shape[0] % 2
        target = torch.nn.functional.one_hot(labels, self.num_classes).float()
        if even:
            state = np.random.get_state()
            try:
                np.random.seed(seed % (1 << 32))
                mixed, target[:even] = self.mixup(images[:even].clone(), labels[:even])  # timm mixes in place
            finally:
                np.random.set_state(state)
            images = torch.cat([mixed, images[even:]]) if even < images.shape[0] else mixed
        return {**batch, "image": images, "target": target, "label": target.argmax(-1)}
