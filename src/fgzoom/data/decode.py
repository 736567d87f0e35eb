"""Image files -> uint8 RGB tensors, or one :class:`BadImageError` line naming the file.

:func:`read_image` decodes with ``torchvision.io.decode_image`` (libjpeg-turbo, libpng, libwebp, giflib):
JPEG (baseline, progressive, CMYK, grayscale), PNG (alpha dropped, palette expanded, 16-bit scaled to 8
bits), palette GIF (first frame) and WebP come out ``Tensor[3, H, W]`` uint8 RGB, pixel for pixel what
PIL's ``Image.open(path).convert("RGB")`` gives (the one exception: a 16-bit grayscale PNG, which PIL clips
to white and this scales, ``value >> 8``). The EXIF orientation is not applied, as PIL's ``open`` does not.
Formats torchvision does not decode (BMP, TIFF, PPM/PGM) go through PIL. A truncated or non-image file
raises :class:`BadImageError`.

The returned tensor keeps the decoder's height-width-channel memory (``stride() == (1, 3 * W, 3)``): the
uint8 resize of ``transforms.v2`` is fastest on it and :func:`fgzoom.data.batches.collate_uint8` stacks it
without a transposing copy.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as F

from fgzoom.errors import FGZoomError

# torchvision's messages start "<function>, <source file>:<line>, " before the reason
_SOURCE_PREFIX = re.compile(r"^[^,\n]*, \S+:\d+, ")
# leading bytes of the formats torchvision decodes; any other file goes to PIL
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")


class BadImageError(FGZoomError):
    """An image file could not be decoded."""


def _bad(path: Path, error: Exception) -> BadImageError:
    lines = str(error).strip().splitlines()
    reason = _SOURCE_PREFIX.sub("", lines[-1])[:200] if lines else ""
    return BadImageError(
        f"cannot read image {path} ({type(error).__name__}: {reason}); replace or remove the file, "
        "or set data.on_bad_image=skip to drop unreadable images at setup"
    )


def load_rgb(path: Path) -> Image.Image:
    """Decode ``path`` fully into an RGB PIL image, or raise :class:`BadImageError` naming the file (the
    reference loop of ``fgzoom.bench.baseline`` and the PIL fallback of :func:`read_image`)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise _bad(path, e) from e


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def read_image(path: Path) -> Tensor:
    """Decode ``path`` into ``Tensor[3, H, W]`` uint8 RGB (module docstring), or raise :class:`BadImageError`."""
    try:
        data = read_file(str(path))
    except Exception as e:  # missing file, permissions
        raise _bad(path, e) from e
    head = bytes(data[:12].tolist())
    if not (head.startswith(_SIGNATURES) or _is_webp(head)):
        return F.pil_to_tensor(load_rgb(path)).permute(1, 2, 0).contiguous().permute(2, 0, 1)
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except Exception as e:  # torchvision raises RuntimeError on truncated or corrupt data
        raise _bad(path, e) from e
    if image.ndim == 4:  # an animated GIF: its first frame, as PIL's open gives it
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = F.to_dtype(image, torch.uint8, scale=True)
    return image


def decode_errors(samples: list, workers: int = 1) -> list[str | None]:
    """Decode every sample's image (``workers`` threads); per sample, the BadImageError message or None."""

    def check(sample) -> str | None:
        try:
            read_image(sample.path)
            return None
        except BadImageError as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(check, samples))
