"""The data's own per-channel mean and std (``data.mean=auto``), for training from scratch."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from fgzoom.data.decode import read_image
from fgzoom.data.transforms import build_transforms


def channel_stats(
    samples: Sequence,
    image_size: int,
    crop_pct: float = 1.0,
    resize_mode: str = "square",
    max_images: int = 1000,
    workers: int = 1,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixel values in [0, 1] over (an evenly spaced subset of) ``samples``.

    Images go through the evaluation geometry (resize by ``crop_pct``, centre crop ``image_size``), so the
    statistics describe what the network is fed. At most ``max_images`` images are decoded, taken at
    evenly spaced positions (deterministic, every class represented in a class-sorted split).

    Returns:
        ``(mean, std)``, two lists of 3 floats.
    """
    if not samples:
        raise ValueError("channel_stats: no samples")
    step = max(1, -(-len(samples) // max_images))  # ceil: at most max_images picked
    picked = list(samples)[::step]
    geometry = build_transforms(False, image_size, crop_pct, resize_mode)  # the evaluation pipeline itself

    def sums(sample) -> torch.Tensor:  # [3, 3]: count, sum, sum of squares per channel
        pixels = geometry(read_image(sample.path)).double().flatten(1) / 255  # [3, S*S] in [0, 1]
        return torch.stack([torch.full((3,), float(pixels.shape[1]), dtype=torch.float64),
                            pixels.sum(1), pixels.square().sum(1)])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        total = torch.stack(list(pool.map(sums, picked))).sum(0)
    count, s1, s2 = total
    mean = s1 / count
    std = (s2 / count - mean.square()).clamp_min(1e-12).sqrt().clamp_min(1e-3)  # a constant channel stays finite
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]
