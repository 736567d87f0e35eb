"""uint8 batches to the device, normalization there.

Loader workers decode and augment uint8 images (:mod:`fgzoom.data.decode`, :mod:`fgzoom.data.transforms`);
:func:`collate_uint8` stacks them as one uint8 batch in channels-last memory (the decoder's layout, so the
stack is a plain copy, not a transpose); the batch crosses to the device as uint8 (a quarter of float32's
bytes; pinned when ``pin_memory``), and :class:`NormalizeOnDevice`'s ``on_after_batch_transfer`` turns it
into the float32 network input there (:func:`normalize_images`), before anything else sees it.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms.v2 import functional as F


def collate_uint8(items: list[dict]) -> dict[str, Tensor]:
    """Batch dataset items: ``image`` uint8 Tensor[3, H, W] each -> uint8 Tensor[B, 3, H, W] in channels-last
    memory (in a worker, in shared memory, as ``default_collate`` does); the other keys by ``default_collate``."""
    images = default_collate([item["image"].permute(1, 2, 0) for item in items])  # [B, H, W, 3] contiguous
    rest = default_collate([{k: v for k, v in item.items() if k != "image"} for item in items])
    return {"image": images.permute(0, 3, 1, 2), **rest}


def normalize_images(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 Tensor[B, 3, H, W] (any memory format, any device) -> float32 Tensor[B, 3, H, W] contiguous on the
    same device: ``(images / 255 - mean) / std`` per channel, computed as torchvision's ``ToDtype(scale=True)``
    and ``Normalize`` compute it (the loader's float32 images before normalization moved to the device)."""
    if images.dtype != torch.uint8:
        raise ValueError(f"normalize_images: images must be uint8, got {images.dtype}")
    x = F.to_dtype(images.contiguous(), torch.float32, scale=True)
    return F.normalize(x, mean=[float(m) for m in mean], std=[float(s) for s in std], inplace=True)


class NormalizeOnDevice(L.LightningDataModule):
    """A datamodule whose batches carry ``image`` uint8 Tensor[B, 3, H, W]: after each batch reaches its device,
    ``image`` becomes the normalized float32 network input (:func:`normalize_images` with :meth:`normalization`).
    Subclasses give the loaders and the normalization."""

    def normalization(self) -> tuple[Sequence[float], Sequence[float]]:
        """``(mean, std)``, three floats each."""
        raise NotImplementedError

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if batch["image"].dtype != torch.uint8:
            return batch
        mean, std = self.normalization()
        return {**batch, "image": normalize_images(batch["image"], mean, std)}


class LoaderDataModule(NormalizeOnDevice):
    """One prediction loader of uint8 batches and its normalization (``trainer.predict(model, datamodule=...)``,
    as ``scripts/predict.py`` classifies image files).

    Args:
        loader: yields batches with ``image`` uint8 Tensor[B, 3, H, W] (:func:`collate_uint8`).
        mean, std: the normalization the model was trained with.
    """

    def __init__(self, loader: DataLoader, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.loader = loader
        self.mean, self.std = tuple(mean), tuple(std)

    def normalization(self) -> tuple[Sequence[float], Sequence[float]]:
        return self.mean, self.std

    def predict_dataloader(self) -> DataLoader:
        return self.loader
