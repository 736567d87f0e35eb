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

from typing import NamedTuple

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
    steps: list = [_Resize(size, antialias=True)]
    if train:
        padding = int(round(translate * image_size))
        if padding > 0 or resize_side > image_size or resize_mode == "shorter":
            steps.append(WindowPaddedRandomCrop(image_size, padding=padding or None))
        if hflip > 0:
            steps.append(_HorizontalFlip(p=hflip))
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
        if randaugment:
            steps.append(_timm_randaugment(randaugment))
    else:
        steps.append(_CenterCrop(image_size))
    return BoxFollowingCompose(steps)


class BoxFollowingCompose(v2.Compose):
    """``v2.Compose`` whose geometric steps record what they did to the last image (``t(image)``), so that
    :meth:`move_box` puts a box through the same geometry by arithmetic: the boxes ``t(image, boxes)`` gives
    (to float rounding), without running ``BoundingBoxes`` through every transform (a fifth of the per-image
    time of the training transform at 500x375). :meth:`frame` gives that geometry as one map per axis, which
    also runs backwards (a box on the output, back to the input image)."""

    def forward(self, *inputs):
        for step in self.transforms:
            if isinstance(step, _Recording):
                step.moves = []
        return super().forward(*inputs)

    def _moves(self) -> list[_Move]:
        return [move for step in self.transforms for move in getattr(step, "moves", ())]

    def move_box(self, xyxy: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` in the last input image's pixels -> in its output's (clamped to the output, as
        the crops clamp ``BoundingBoxes``)."""
        for move in self._moves():
            xyxy = move(*xyxy)
        return xyxy

    def frame(self) -> tuple[float, float, float, float]:
        """The geometry of the last image as ``(scale_y, shift_y, scale_x, shift_x)``: a point at ``(y, x)`` of
        the input image lands at ``(y * scale_y + shift_y, x * scale_x + shift_x)`` of the output (a negative
        scale: the axis was flipped). Every step here (resize, crop, flip) is such a map; the crops' clamp is
        left out, so the inverse takes a box inside the output to the part of the input the output shows."""
        sy, ty, sx, tx = 1.0, 0.0, 1.0, 0.0
        for move in self._moves():
            (ny, dy, oy), (nx, dx, ox) = move.y, move.x
            sy, ty, sx, tx = sy * ny / dy, ty * ny / dy + oy, sx * nx / dx, tx * nx / dx + ox
        return sy, ty, sx, tx


class _Move(NamedTuple):
    """What one geometric step did to one image, per axis ``(num, den, shift)``: ``out = in * num / den + shift``
    (a negative ``num`` flips the axis), then, for a crop, a clamp of boxes to its ``(height, width)``."""

    y: tuple[float, float, float]
    x: tuple[float, float, float]
    clamp: tuple[int, int] | None = None

    def __call__(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        (ny, dy, oy), (nx, dx, ox) = self.y, self.x
        x0, x1 = x0 * nx / dx + ox, x1 * nx / dx + ox
        y0, y1 = y0 * ny / dy + oy, y1 * ny / dy + oy
        if nx < 0:  # a flip swaps the edges
            x0, x1 = x1, x0
        if ny < 0:
            y0, y1 = y1, y0
        if self.clamp is not None:
            height, width = self.clamp
            x0, x1 = (min(max(v, 0.0), width) for v in (x0, x1))
            y0, y1 = (min(max(v, 0.0), height) for v in (y0, y1))
        return x0, y0, x1, y1


class _Recording:
    """A geometric v2 step that records, per image it transforms, the :class:`_Move` that moves a box the
    same way."""

    moves: list[_Move]


class _Resize(_Recording, v2.Resize):
    def transform(self, inpt, params: dict):
        out = super().transform(inpt, params)
        if _is_image(inpt):
            (h, w), (oh, ow) = inpt.shape[-2:], out.shape[-2:]
            self.moves.append(_Move((oh, h, 0.0), (ow, w, 0.0)))
        return out


class _HorizontalFlip(_Recording, v2.RandomHorizontalFlip):
    def transform(self, inpt, params: dict):
        if _is_image(inpt):
            self.moves.append(_Move((1, 1, 0.0), (-1, 1, float(inpt.shape[-1]))))
        return super().transform(inpt, params)


class _CenterCrop(_Recording, v2.CenterCrop):
    def transform(self, inpt, params: dict):
        if _is_image(inpt):
            (h, w), (ch, cw) = inpt.shape[-2:], self.size
            if ch <= h and cw <= w:  # torchvision's anchor; a crop larger than the image pads (not used here)
                top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
                self.moves.append(_crop_move(top, left, ch, cw))
        return super().transform(inpt, params)


def _crop_move(top: float, left: float, height: int, width: int) -> _Move:
    """The box move of a crop at ``(top, left)`` of ``height x width``: shift, then clamp to the crop."""
    return _Move((1, 1, -float(top)), (1, 1, -float(left)), (height, width))


def _is_image(inpt) -> bool:
    return isinstance(inpt, torch.Tensor) and not isinstance(inpt, tv_tensors.BoundingBoxes)


class WindowPaddedRandomCrop(_Recording, v2.RandomCrop):
    """``v2.RandomCrop(size, padding)`` (zero fill): the same random draws, pixels and boxes, but the image's
    crop window is padded, not the whole image first, and keeps its channels-last memory (padding the whole
    image cost as much as the rest of the transform, and its planar output a transposing collate)."""

    def transform(self, inpt, params: dict):
        if _is_image(inpt) and (params["needs_crop"] or params["needs_pad"]):
            pad_left, pad_top = params["padding"][:2]  # the crop's (top, left) are in the padded frame
            self.moves.append(_crop_move(params["top"] - pad_top, params["left"] - pad_left, params["height"],
                                         params["width"]))
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
