"""Boxes from attention maps, batched: threshold boxes (WS-DAN/MMAL) and fixed-size glimpses.

Box convention everywhere: ``Tensor[B, 4]`` int64 ``(y0, x0, y1, x1)``, end-exclusive, in the grid
of the tensor that will be cropped. No Python loop over the batch and no host synchronisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def normalize_attention(attention: Tensor) -> tuple[Tensor, Tensor]:
    """Scale each map to [0, 1] by its min and max and flag degenerate maps.

    Args:
        attention: Tensor[B, h, w] float.

    Returns:
        (Tensor[B, h, w] in [0, 1], Tensor[B] bool) where True marks a map that is constant, all zero,
        or holds NaN/Inf; such maps are returned as all ones (the whole frame).
    """
    flat = attention.flatten(1).float()  # [B, h*w]
    finite = torch.isfinite(flat).all(dim=1)
    safe = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat))
    lo = safe.amin(dim=1, keepdim=True)
    hi = safe.amax(dim=1, keepdim=True)
    span = hi - lo
    degenerate = ~finite | (span.squeeze(1) <= 1e-12)
    norm = torch.where(degenerate[:, None], torch.ones_like(safe), (safe - lo) / span.clamp_min(1e-12))
    return norm.view_as(attention), degenerate


def resize_attention(attention: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bilinearly resize Tensor[B, h, w] maps to ``grid`` (no-op when already that size)."""
    if tuple(attention.shape[-2:]) == tuple(grid):
        return attention
    return F.interpolate(attention[:, None].float(), size=grid, mode="bilinear", align_corners=False)[:, 0]


def threshold_boxes(
    attention: Tensor,
    threshold: Tensor | float,
    padding: float = 0.0,
    min_size: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The bounding box of ``attention >= threshold * max`` per sample.

    Args:
        attention: Tensor[B, h, w] float, one map per sample (e.g. the mean over M maps).
        threshold: scalar or Tensor[B] in [0, 1], relative to each map's range (min..max).
        padding: grow each box by this fraction of its own height/width on every side.
        min_size: smallest box side as a fraction of the frame side; smaller boxes grow about their centre.

    Returns:
        (boxes Tensor[B, 4] int64 ``(y0, x0, y1, x1)``, degenerate Tensor[B] bool). Degenerate maps give
        the whole frame.
    """
    b, h, w = attention.shape
    norm, degenerate = normalize_attention(attention)
    if isinstance(threshold, Tensor):
        thr = threshold.to(device=norm.device, dtype=norm.dtype).reshape(-1, 1, 1)  # [B or 1, 1, 1]
        thr = thr.clamp(max=1.0)
    else:  # a Python number stays a kernel argument: no tensor copied to the device (a sync on CUDA)
        thr = min(float(threshold), 1.0)
    mask = norm >= thr  # [B, h, w]; the peak is always inside
    rows = mask.any(dim=2)  # [B, h]
    cols = mask.any(dim=1)  # [B, w]
    y0 = rows.float().argmax(dim=1)
    y1 = h - rows.flip(1).float().argmax(dim=1)
    x0 = cols.float().argmax(dim=1)
    x1 = w - cols.flip(1).float().argmax(dim=1)
    boxes = torch.stack([y0, x0, y1, x1], dim=1).float()  # [B, 4]
    y0, x0, y1, x1 = _pad_and_min_size(boxes, (h, w), padding, min_size).unbind(1)
    # Degenerate maps get the whole frame (filled with Python numbers: nothing copied to the device).
    d = degenerate
    y0, x0, y1, x1 = y0.masked_fill(d, 0), x0.masked_fill(d, 0), y1.masked_fill(d, h), x1.masked_fill(d, w)
    return torch.stack([y0, x0, y1, x1], dim=1).long(), degenerate


def glimpse_boxes(attention: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """A ``size = (bh, bw)`` box centred on each map's peak, shifted to lie inside the frame.

    All boxes have the same size, so ``crop_resize(..., scale_factor=...)`` is valid on them.

    Args:
        attention: Tensor[B, h, w] float.
        size: box height and width in grid cells, 1 <= bh <= h, 1 <= bw <= w.

    Returns:
        (boxes Tensor[B, 4] int64, degenerate Tensor[B] bool); degenerate maps get a centred box.
    """
    b, h, w = attention.shape
    bh, bw = size
    if not (1 <= bh <= h and 1 <= bw <= w):
        raise ValueError(f"glimpse size {size} must fit the {h}x{w} grid")
    norm, degenerate = normalize_attention(attention)
    peak = norm.flatten(1).argmax(dim=1)  # [B]
    py = torch.where(degenerate, torch.full_like(peak, h // 2), peak // w)
    px = torch.where(degenerate, torch.full_like(peak, w // 2), peak % w)
    y0 = (py - bh // 2).clamp(0, h - bh)
    x0 = (px - bw // 2).clamp(0, w - bw)
    return torch.stack([y0, x0, y0 + bh, x0 + bw], dim=1).long(), degenerate


def _pad_and_min_size(boxes: Tensor, grid: tuple[int, int], padding: float, min_size: float) -> Tensor:
    """Grow float boxes Tensor[B, 4] by ``padding`` and to ``min_size``, round outward, clip to the grid."""
    h, w = grid
    y0, x0, y1, x1 = boxes.unbind(1)
    bh, bw = y1 - y0, x1 - x0
    y0, y1 = y0 - padding * bh, y1 + padding * bh
    x0, x1 = x0 - padding * bw, x1 + padding * bw
    if min_size > 0:
        mh, mw = min_size * h, min_size * w
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        half_h = torch.maximum((y1 - y0) / 2, torch.full_like(cy, mh / 2))
        half_w = torch.maximum((x1 - x0) / 2, torch.full_like(cx, mw / 2))
        # shift instead of clip so the minimum size survives at the borders
        y0, y1, x0, x1 = cy - half_h, cy + half_h, cx - half_w, cx + half_w
        y0, y1 = _shift_inside(y0, y1, h)
        x0, x1 = _shift_inside(x0, x1, w)
    y0 = y0.floor().clamp(0, h - 1)
    x0 = x0.floor().clamp(0, w - 1)
    y1 = torch.maximum(y1.ceil().clamp(1, h), y0 + 1)
    x1 = torch.maximum(x1.ceil().clamp(1, w), x0 + 1)
    return torch.stack([y0, x0, y1, x1], dim=1)


def _shift_inside(lo: Tensor, hi: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Shift intervals [lo, hi) to lie in [0, size) without changing their length (when they fit)."""
    shift = (-lo).clamp_min(0) - (hi - size).clamp_min(0)
    return (lo + shift).clamp(0, size), (hi + shift).clamp(0, size)


def scale_boxes(boxes: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    """Map integer boxes Tensor[B, 4] from an ``src = (h, w)`` grid to a ``dst = (H, W)`` grid,
    rounding outward so the mapped box covers the same region. Returns Tensor[B, 4] int64.

    Exact integer arithmetic: ``floor(y0 * H / h)`` and ``ceil(y1 * H / h)``, no float rounding."""
    (h, w), (H, W) = src, dst
    y0, x0, y1, x1 = boxes.long().unbind(1)  # [B] each, non-negative
    y0, x0 = torch.div(y0 * H, h, rounding_mode="floor"), torch.div(x0 * W, w, rounding_mode="floor")
    y1 = -torch.div(-y1 * H, h, rounding_mode="floor")  # ceil
    x1 = -torch.div(-x1 * W, w, rounding_mode="floor")
    y1 = torch.maximum(y1.clamp(max=H), y0 + 1)
    x1 = torch.maximum(x1.clamp(max=W), x0 + 1)
    return torch.stack([y0, x0, y1, x1], dim=1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise IoU of matching boxes Tensor[N, 4] ``(y0, x0, y1, x1)`` (float or int). Returns Tensor[N]."""
    a, b = a.double(), b.double()
    ih = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    iw = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = ih * iw
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))
