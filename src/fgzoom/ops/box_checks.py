"""Argument checks of the box ops: each raises ``ValueError`` naming the argument, its value and what is allowed.
They read Python numbers and tensor shapes/dtypes only, never tensor values, so they cost no device sync."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


# ---------------------------------------------------------------------------------------- argument checks
def describe(value: object) -> str:
    """A tensor's shape and dtype (never its values), or a short repr of anything else."""
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)} {value.dtype}"
    return repr(value)

def check_maps(maps: object, name: str) -> None:
    """``maps`` must be a floating ``Tensor[B, h, w]`` with ``h, w >= 1``."""
    if not isinstance(maps, Tensor) or maps.dim() != 3 or maps.shape[1] < 1 or maps.shape[2] < 1:
        raise ValueError(f"{name}={describe(maps)}: must be a Tensor[B, h, w] of maps with h, w >= 1")
    if not maps.is_floating_point():
        raise ValueError(f"{name}={describe(maps)}: must have a floating dtype; convert it with .float()")

def check_boxes(boxes: object, name: str, *, integer: bool = False) -> None:
    """``boxes`` must be a real ``Tensor[N, 4]`` (an integer one if ``integer``)."""
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}={describe(boxes)}: must be a Tensor[N, 4] of (y0, x0, y1, x1)")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise ValueError(f"{name}={describe(boxes)}: must have a real (integer or floating) dtype")
    if integer and boxes.is_floating_point():
        raise ValueError(f"{name}={describe(boxes)}: must have an integer dtype; round float boxes (round_boxes)")

def check_box_array(boxes: object, name: str) -> None:
    """``boxes`` must be a ``Tensor[..., 4]`` (any leading shape)."""
    if not isinstance(boxes, Tensor) or boxes.dim() < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name}={describe(boxes)}: must be a Tensor[..., 4] of (y0, x0, y1, x1)")


def check_grid(grid: object, name: str) -> tuple[int, int]:
    """``grid`` must be a pair of positive ints (tuple, list or ``torch.Size``); returns it as a tuple."""
    ok = (
        isinstance(grid, (tuple, list))
        and len(grid) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in grid)
    )
    if not ok:
        raise ValueError(f"{name}={grid!r}: must be a pair (h, w) of ints >= 1")
    return int(grid[0]), int(grid[1])

def check_number(
    value: object, name: str, lo: float, hi: float, allowed: str, *, lo_open: bool = False
) -> None:
    """``value`` must be a real Python/NumPy number (not a tensor, not a bool) in ``[lo, hi]`` (``(lo, hi]``
    if ``lo_open``)."""
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and not math.isnan(value)
        and (lo < value if lo_open else lo <= value)
        and value <= hi
        and math.isfinite(value)
    )
    if not ok:
        raise ValueError(f"{name}={value!r}: must be {allowed}")

def check_threshold(threshold: object, batch: int, *, upper_open: bool) -> None:
    """A number in [0, 1] ([0, 1) if ``upper_open``), or a floating ``Tensor[B]`` / one-element tensor whose
    values are not read (that would synchronise the device)."""
    if isinstance(threshold, Tensor):
        if not threshold.is_floating_point() or threshold.dim() > 1 or threshold.numel() not in (1, batch):
            raise ValueError(
                f"threshold={describe(threshold)}: a threshold tensor must be a floating Tensor[B] (B={batch}) "
                "or hold one value"
            )
        return
    allowed = "a number in [0, 1) or a Tensor[B]" if upper_open else "a number in [0, 1] or a Tensor[B]"
    ok = isinstance(threshold, numbers.Real) and not isinstance(threshold, bool) and 0.0 <= threshold <= 1.0
    if not ok or (upper_open and threshold >= 1.0):
        raise ValueError(f"threshold={threshold!r}: must be {allowed} (fraction of each map's range)")

