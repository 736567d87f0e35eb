"""A torch Dataset over :class:`~fgzoom.data.index.Sample` lists, yielding image, label and box."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from fgzoom.data.decode import BadImageError, decode_errors, load_rgb, read_image
from fgzoom.data.seeding import seeded_rng
from fgzoom.data.transforms import BoxFollowingCompose

__all__ = ["BadImageError", "FGVCDataset", "decode_errors", "load_rgb", "read_image"]


class FGVCDataset(Dataset):
    """Samples -> dicts of ``image`` uint8 Tensor[3, S, S] (RGB, not normalized: :mod:`fgzoom.data.batches`),
    ``label`` int64, ``box`` Tensor[4] float ``(y0, x0, y1, x1)`` in input-pixel coordinates (the whole frame
    when unknown), ``has_box`` bool and ``index`` int64 (position in this split). With ``file_geometry`` also
    ``file_size`` Tensor[2] int64, the decoded file's ``(H, W)``, and ``file_to_input`` Tensor[4] float32, where
    the transform put the file's pixels (:meth:`~fgzoom.data.transforms.BoxFollowingCompose.frame`: ``(sy, ty,
    sx, tx)``, file ``(y, x)`` -> input ``(y * sy + ty, x * sx + tx)``), so boxes on the input can be mapped
    back onto the file (:func:`fgzoom.ops.boxes.boxes_to_source`).

    A key is an index, or ``(index, seed)`` (from :class:`~fgzoom.data.seeding.EpochSeededSampler`): the
    random transforms then run under ``seed``, so a sample's augmentation does not depend on which
    worker loads it or on what that worker loaded before.
    """

    def __init__(self, samples: list, transform: BoxFollowingCompose, file_geometry: bool = False) -> None:
        self.samples = samples
        self.transform = transform
        self.file_geometry = file_geometry

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
        image = read_image(sample.path)
        h, w = image.shape[-2:]
        tensor = self.transform(image)
        if sample.box is None:
            y0, x0, y1, x1, has_box = 0.0, 0.0, float(tensor.shape[-2]), float(tensor.shape[-1]), False
        else:  # clamped to the image, then moved by the geometry the transform just applied to the image
            y0, x0, y1, x1 = sample.box
            x0, y0, x1, y1 = (float(min(max(v, 0), side)) for v, side in ((x0, w), (y0, h), (x1, w), (y1, h)))
            x0, y0, x1, y1 = self.transform.move_box((x0, y0, x1, y1))
            has_box = x1 > x0 and y1 > y0
        item = {
            "image": tensor.as_subclass(torch.Tensor),
            "label": torch.tensor(sample.label, dtype=torch.long),
            "box": torch.tensor([y0, x0, y1, x1], dtype=torch.float32),
            "has_box": torch.tensor(has_box),
            "index": torch.tensor(index, dtype=torch.long),
        }
        if self.file_geometry:  # the transform's record of this image (it just ran, in this process)
            item["file_size"] = torch.tensor([h, w], dtype=torch.long)
            item["file_to_input"] = torch.tensor(self.transform.frame(), dtype=torch.float32)
        return item
