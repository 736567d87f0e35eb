"""FGVC transforms on (image, box) pairs with torchvision.transforms.v2, on uint8 tensors.

Train: Resize(image_size / crop_pct) -> RandomCrop(image_size, padding=translate * image_size) ->
horizontal flip [-> colour jitter] [-> RandAugment]. Eval: Resize(image_size / crop_pct) ->
CenterCrop(image_size). The image stays ``Tensor[3, S, S]`` uint8 (the decoder's RGB, see
:mod:`fgzoom.data.decode`); scaling to [0, 1] and ``data.mean``/``data.std`` happen on the device, batch by
batch (:mod:`fgzoom.data.batches`).

Two ways to translate in training: ``crop_pct < 1`` (resize larger, crop randomly: the FGVC recipe, whose
evaluation centre crop cuts ``(1 - crop_pct) / 2`` off each border) and ``translate > 0`` (zero-pad by that
fraction of the side and crop randomly: a random shift that leaves the evaluation frame whole). Boxes are
``tv_tensors.BoundingBoxes`` so every geometric step moves them too; they must lie inside the image (the
dataset clamps them), as every crop keeps them inside its frame.

The resize is torchvision's antialiased bilinear on uint8, which differs from PIL's (the path before uint8
tensors) by at most a few grey levels; colour jitter runs torchvision's tensor kernels (within a grey level
or two of its PIL ones). RandAugment is timm's, which needs PIL images: the image goes to PIL and back for it.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

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
) -> v2.Compose:
    """Build the train or eval pipeline; called as ``t(image, bounding_boxes)`` with ``image`` uint8
    ``Tensor[3, H, W]`` (or ``tv_tensors.Image``), it returns the uint8 ``Tensor[3, S, S]`` and the boxes;
    ``t(image)`` (a sample without a box) returns the image alone, the same pixels for the same random draws.

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
            steps.append(WindowPaddedRandomCrop(image_size, padding=padding or None))
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(p=hflip))
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
        if randaugment:
            steps.append(_timm_randaugment(randaugment))
    else:
        steps.append(v2.CenterCrop(image_size))
    return v2.Compose(steps)


class WindowPaddedRandomCrop(v2.RandomCrop):
    """``v2.RandomCrop(size, padding)`` (zero fill): the same random draws, pixels and boxes, but the image's
    crop window is padded, not the whole image first, and keeps its channels-last memory (padding the whole
    image cost as much as the rest of the transform, and its planar output a transposing collate)."""

    def transform(self, inpt, params: dict):
        if not params["needs_pad"] or not isinstance(inpt, torch.Tensor) or isinstance(inpt, tv_tensors.BoundingBoxes):
            return super().transform(inpt, params)  # no padding, a PIL image, or boxes (cheap to pad)
        left, top = params["padding"][:2]
        window = (params["top"] - top, params["left"] - left, params["height"], params["width"])
        out = _crop_zero_filled(inpt.as_subclass(torch.Tensor), *window)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def _crop_zero_filled(image: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """Tensor[C, H, W] -> Tensor[C, height, width]: the window at ``(top, left)`` (which may reach outside the
    image), zero outside the image, in channels-last memory (a view of ``image`` when the window is inside it)."""
    c, h, w = image.shape
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + height, h), min(left + width, w)
    if (y0, x0, y1, x1) == (top, left, top + height, left + width):  # inside the image: a view, as a crop is
        return image[:, y0:y1, x0:x1]
    out = image.new_zeros(height, width, c).permute(2, 0, 1)
    if y1 > y0 and x1 > x0:
        out[:, y0 - top:y1 - top, x0 - left:x1 - left] = image[:, y0:y1, x0:x1]
    return out


class _OnPILImageOnly(torch.nn.Module):
    """Apply a PIL-only photometric transform to the uint8 image (through PIL and back) and pass the boxes."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, image: torch.Tensor, *boxes):
        out = F.pil_to_tensor(self.fn(F.to_pil_image(image.as_subclass(torch.Tensor))))
        out = tv_tensors.Image(out) if isinstance(image, tv_tensors.Image) else out
        return (out, *boxes) if boxes else out


def _timm_randaugment(config: str) -> torch.nn.Module:
    from timm.data.auto_augment import rand_augment_transform

    # img_mean (timm's fill colour) is left out: only the geometric ops, which are not used, fill
    hparams = {"translate_const": 0}
    # geometric ops would move the part without moving its box: keep RandAugment photometric only
    ops = [
        "AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd",
        "Color", "Contrast", "Brightness", "Sharpness",
    ]
    try:
        fn = rand_augment_transform(config, hparams, transforms=ops)
    except Exception as e:  # timm raises AssertionError/KeyError on malformed strings
        raise ConfigError(f"data.randaugment={config!r}: not a timm RandAugment string like 'rand-m9-mstd0.5' ({e})") from e
    return _OnPILImageOnly(fn)
