"""A torch Dataset over :class:`~fgzoom.data.index.Sample` lists, yielding image, label and box."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from fgzoom.data.seeding import seeded_rng
from fgzoom.errors import FGZoomError


class BadImageError(FGZoomError):
    """An image file could not be decoded."""


def load_rgb(path: Path) -> Image.Image:
    """Decode ``path`` fully into an RGB PIL image, or raise :class:`BadImageError` naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise BadImageError(
            f"cannot read image {path} ({type(e).__name__}: {e}); replace or remove the file, "
            "or set data.on_bad_image=skip to drop unreadable images at setup"
        ) from e


def decode_errors(samples: list, workers: int = 1) -> list[str | None]:
    """Decode every sample's image (``workers`` threads); per sample, the BadImageError message or None."""

    def check(sample) -> str | None:
        try:
            load_rgb(sample.path)
            return None
        except BadImageError as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(check, samples))


class FGVCDataset(Dataset):
    """Samples -> dicts of ``image`` Tensor[3, S, S], ``label`` int64, ``box`` Tensor[4] float
    ``(y0, x0, y1, x1)`` in input-pixel coordinates (the whole frame when unknown), ``has_box`` bool
    and ``index`` int64 (position in this split).

    A key is an index, or ``(index, seed)`` (from :class:`~fgzoom.data.seeding.EpochSeededSampler`): the
    random transforms then run under ``seed``, so a sample's augmentation does not depend on which
    worker loads it or on what that worker loaded before.
    """

    def __init__(self, samples: list, transform: Callable) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        if isinstance(key, tuple):
            index, seed = key
            with seeded_rng(seed):
                return self._load(index)
        return self._load(key)

    def _load(self, index: int) -> dict:
        sample = self.samples[index]
        image = load_rgb(sample.path)
        h, w = image.height, image.width
        if sample.box is not None:
            y0, x0, y1, x1 = sample.box
            xyxy = torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)
        else:
            xyxy = torch.tensor([[0.0, 0.0, float(w), float(h)]])
        boxes = tv_tensors.BoundingBoxes(xyxy, format="XYXY", canvas_size=(h, w))
        tensor, boxes = self.transform(image, boxes)
        x0, y0, x1, y1 = boxes[0].tolist()
        has_box = sample.box is not None and x1 > x0 and y1 > y0
        return {
            "image": tensor.as_subclass(torch.Tensor),
            "label": torch.tensor(sample.label, dtype=torch.long),
            "box": torch.tensor([y0, x0, y1, x1], dtype=torch.float32),
            "has_box": torch.tensor(has_box),
            "index": torch.tensor(index, dtype=torch.long),
        }
