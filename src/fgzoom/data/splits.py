"""Hold out a stratified, seeded validation split from a training list."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from fgzoom.data.index import Sample


def stratified_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` into (train, val) with ``fraction`` of every class in val.

    Every class with at least two samples gets at least one validation sample and keeps at least one
    training sample. The split depends only on ``seed`` and the sample order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_fraction={fraction}: must be in (0, 1)")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_class[s.label].append(i)
    rng = np.random.default_rng(seed)
    val_idx: set[int] = set()
    for label in sorted(by_class):
        idx = by_class[label]
        if len(idx) < 2:
            continue
        k = min(max(1, int(round(fraction * len(idx)))), len(idx) - 1)
        val_idx.update(rng.permutation(idx)[:k].tolist())
    train = [s for i, s in enumerate(samples) if i not in val_idx]
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val
