"""FGVC transforms on (image, box) pairs with torchvision.transforms.v2.

Train: Resize(image_size / crop_pct) -> RandomCrop(image_size, padding=translate * image_size) ->
horizontal flip [-> colour jitter] [-> RandAugment] -> tensor -> Normalize. Eval: Resize(image_size /
crop_pct) -> CenterCrop(image_size) -> tensor -> Normalize.

Two ways to translate in training: ``crop_pct < 1`` (resize larger, crop randomly: the FGVC recipe, whose
evaluation centre crop cuts ``(1 - crop_pct) / 2`` off each border) and ``translate > 0`` (zero-pad by that
fraction of the side and crop randomly: a random shift that leaves the evaluation frame whole). Boxes are ``tv_tensors.BoundingBoxes`` so every geometric step moves them too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.transforms import v2

from fgzoom.errors import ConfigError

RESIZE_MODES = ("square", "shorter")


def build_transforms(
    train: bool,
    image_size: int,
    crop_pct: float = 0.875,
    resize_mode: str = "square",
    hflip: float = 0.5,
    translate: float = 0.0,
    color_jitter: float = 0.0,
    randaugment: str | None = None,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> v2.Compose:
    """Build the train or eval pipeline; called as ``t(pil_image, bounding_boxes)``.

    Args:
        image_size: side of the square network input.
        crop_pct: ``image_size / resize side`` (FGVC practice: 0.875, i.e. 512 -> 448).
        resize_mode: ``square`` resizes to (r, r) (WS-DAN style); ``shorter`` resizes the shorter side to r.
        hflip: probability of a horizontal flip (train only). 0 where orientation carries the class.
        translate: largest random shift, as a fraction of ``image_size`` (train only): the resized image is
            zero-padded by ``round(translate * image_size)`` pixels on each side and cropped at random.
        color_jitter: strength of brightness/contrast/saturation jitter, 0 to disable (train only).
        randaugment: a timm RandAugment string such as ``rand-m9-mstd0.5``, or None (train only).
    """
    if resize_mode not in RESIZE_MODES:
        raise ConfigError(f"data.resize_mode={resize_mode!r}: must be one of {RESIZE_MODES}")
    if not 0.0 < crop_pct <= 1.0:
        raise ConfigError(f"data.crop_pct={crop_pct}: must be in (0, 1]")
    if not 0.0 <= translate < 0.5:
        raise ConfigError(f"data.translate={translate}: must be in [0, 0.5) (a fraction of data.image_size)")
    if not 0.0 <= hflip <= 1.0:
        raise ConfigError(f"data.hflip={hflip}: must be a probability in [0, 1]")
    resize_side = int(round(image_size / crop_pct))
    size = (resize_side, resize_side) if resize_mode == "square" else resize_side
    steps: list = [v2.Resize(size, antialias=True)]
    if train:
        padding = int(round(translate * image_size))
        if padding > 0 or resize_side > image_size or resize_mode == "shorter":
            steps.append(v2.RandomCrop(image_size, padding=padding or None))
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(p=hflip))
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
        if randaugment:
            steps.append(_timm_randaugment(randaugment, mean))
    else:
        steps.append(v2.CenterCrop(image_size))
    steps += [
        v2.ClampBoundingBoxes(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]
    return v2.Compose(steps)


class _OnImageOnly(torch.nn.Module):
    """Apply a PIL-only photometric transform to the image and pass the boxes through."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, image, boxes):
        return self.fn(image), boxes


def _timm_randaugment(config: str, mean: Sequence[float]) -> torch.nn.Module:
    from timm.data.auto_augment import rand_augment_transform

    hparams = {"translate_const": 0, "img_mean": tuple(int(round(255 * m)) for m in mean)}
    # geometric ops would move the part without moving its box: keep RandAugment photometric only
    ops = [
        "AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd",
        "Color", "Contrast", "Brightness", "Sharpness",
    ]
    try:
        fn = rand_augment_transform(config, hparams, transforms=ops)
    except Exception as e:  # timm raises AssertionError/KeyError on malformed strings
        raise ConfigError(f"data.randaugment={config!r}: not a timm RandAugment string like 'rand-m9-mstd0.5' ({e})") from e
    return _OnImageOnly(fn)
