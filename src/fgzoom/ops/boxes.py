"""Boxes from attention maps, batched: threshold boxes (WS-DAN/MMAL), fixed-size glimpses, and the
continuous rules ``threshold``, ``mass`` and ``moments`` (sub-cell boxes).

Box convention: ``(y0, x0, y1, x1)`` in the grid of a tensor, where 0 is the top/left edge of the first
cell and ``h``/``w`` the bottom/right edge of the last. Integer boxes (``Tensor[B, 4]`` int64, end-exclusive)
feed the exact ``slice`` sampler (``crop_resize``); float boxes (``Tensor[B, 4]`` float32) feed the
``affine`` sampler (``crop_affine``) and are rounded outward (``round_boxes``) for ``slice``. An integer box
means the same region as its float copy. No Python loop over the batch and no host synchronisation.
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
    """The bounding box of ``attention >= threshold * max`` per sample in whole cells: the ``threshold`` rule
    of ``rule_boxes`` rounded outward (``round_boxes``).

    Args:
        attention: Tensor[B, h, w] float, one map per sample (e.g. the mean over M maps).
        threshold: scalar or Tensor[B] in [0, 1], relative to each map's range (min..max).
        padding: grow each box by this fraction of its own height/width on every side.
        min_size: smallest box side as a fraction of the frame side; smaller boxes grow about their centre.

    Returns:
        (boxes Tensor[B, 4] int64 ``(y0, x0, y1, x1)``, degenerate Tensor[B] bool). Degenerate maps give
        the whole frame.
    """
    boxes, degenerate = rule_boxes(attention, "threshold", threshold=threshold, padding=padding, min_size=min_size)
    return round_boxes(boxes, tuple(attention.shape[-2:])), degenerate


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


def grow_boxes(boxes: Tensor, grid: tuple[int, int], padding: float, min_size: float) -> Tensor:
    """Grow float boxes Tensor[B, 4] by ``padding`` (fraction of their side, each side) and to at least
    ``min_size`` (fraction of the frame side, about their centre, shifted to stay inside), clipped to ``grid``.
    Continuous: no rounding. Returns Tensor[B, 4] float."""
    h, w = grid
    y0, x0, y1, x1 = boxes.float().unbind(1)
    bh, bw = y1 - y0, x1 - x0
    y0, y1 = (y0 - padding * bh).clamp(0, h), (y1 + padding * bh).clamp(0, h)
    x0, x1 = (x0 - padding * bw).clamp(0, w), (x1 + padding * bw).clamp(0, w)
    if min_size > 0:  # boxes already larger than min_size stay as they are
        mh, mw = min_size * h, min_size * w
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        half_h = torch.maximum((y1 - y0) / 2, torch.full_like(cy, mh / 2))
        half_w = torch.maximum((x1 - x0) / 2, torch.full_like(cx, mw / 2))
        # shift instead of clip so the minimum size survives at the borders
        y0, y1, x0, x1 = cy - half_h, cy + half_h, cx - half_w, cx + half_w
        y0, y1 = _shift_inside(y0, y1, h)
        x0, x1 = _shift_inside(x0, x1, w)
    return torch.stack([y0.clamp(0, h), x0.clamp(0, w), y1.clamp(0, h), x1.clamp(0, w)], dim=1)


def round_boxes(boxes: Tensor, grid: tuple[int, int]) -> Tensor:
    """Round float boxes Tensor[B, 4] outward to integer cells of ``grid``, at least one cell, inside the grid.
    Returns Tensor[B, 4] int64 (the region the ``slice`` sampler crops for a continuous box)."""
    h, w = grid
    y0, x0, y1, x1 = boxes.float().unbind(1)
    y0 = y0.floor().clamp(0, h - 1)
    x0 = x0.floor().clamp(0, w - 1)
    y1 = torch.maximum(y1.ceil().clamp(1, h), y0 + 1)
    x1 = torch.maximum(x1.ceil().clamp(1, w), x0 + 1)
    return torch.stack([y0, x0, y1, x1], dim=1).long()


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


# ---------------------------------------------------------------------------------------- continuous rules
RULES = ("threshold", "mass", "moments")  # the rules rule_boxes computes


def _pixel_centres(n: int, device: torch.device) -> Tensor:
    """Tensor[n] float: the continuous coordinate of each cell's centre (i + 0.5)."""
    return torch.arange(n, device=device, dtype=torch.float32) + 0.5


def threshold_extent(norm: Tensor, threshold: Tensor | float) -> Tensor:
    """Bounding box of ``norm >= threshold`` on the cells of Tensor[B, h, w] maps in [0, 1], as a float box
    on cell edges. Returns Tensor[B, 4] float."""
    b, h, w = norm.shape
    if isinstance(threshold, Tensor):
        thr = threshold.to(device=norm.device, dtype=norm.dtype).reshape(-1, 1, 1).clamp(max=1.0)
    else:  # a Python number stays a kernel argument: no tensor copied to the device (a sync on CUDA)
        thr = min(float(threshold), 1.0)
    mask = norm >= thr  # the peak (1.0) is always inside
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # [B, h], [B, w]
    y0 = rows.float().argmax(dim=1)
    y1 = h - rows.flip(1).float().argmax(dim=1)
    x0 = cols.float().argmax(dim=1)
    x1 = w - cols.flip(1).float().argmax(dim=1)
    return torch.stack([y0, x0, y1, x1], dim=1).float()


def _shortest_interval(weights: Tensor, mass: float) -> tuple[Tensor, Tensor]:
    """Per row of Tensor[B, n] non-negative weights, the shortest run of cells ``[start, end)`` holding at
    least ``mass`` of the row's total. Returns (start, end) Tensor[B] float (cell edges)."""
    b, n = weights.shape
    cdf = weights.cumsum(dim=1)
    cdf = cdf / cdf[:, -1:].clamp_min(1e-12)  # [B, n], ends at 1
    before = torch.cat([cdf.new_zeros(b, 1), cdf[:, :-1]], dim=1)  # mass before each start cell
    target = (before + mass - 1e-6).clamp(max=1.0)
    # end cell (inclusive) of the run starting at each cell: first index whose cdf reaches the target
    last = torch.searchsorted(cdf.contiguous(), target.contiguous()).clamp(max=n - 1)  # [B, n]
    length = last - torch.arange(n, device=weights.device) + 1
    length = torch.where(before + mass - 1e-6 <= 1.0, length, torch.full_like(length, n + 1))  # runs too late
    held = cdf.gather(1, last) - before  # mass each run holds
    # shortest run first, and among equally short runs the one holding the most mass (the peak's)
    score = length.double() - held.double().clamp(0, 1) * 0.5
    start = score.argmin(dim=1)
    end = last.gather(1, start[:, None])[:, 0] + 1
    return start.float(), end.float()


def mass_extent(norm: Tensor, mass: float) -> Tensor:
    """Per axis, the shortest run of cells holding ``mass`` of the attention's marginal on that axis (the
    map's minimum subtracted, as ``normalize_attention`` does). Tensor[B, h, w] -> Tensor[B, 4] float."""
    y0, y1 = _shortest_interval(norm.sum(dim=2), mass)
    x0, x1 = _shortest_interval(norm.sum(dim=1), mass)
    return torch.stack([y0, x0, y1, x1], dim=1)


def moments_extent(norm: Tensor, sigmas: float, threshold: Tensor | float = 0.0) -> Tensor:
    """Centre +- ``sigmas`` standard deviations per axis of the attention above ``threshold`` (weights
    ``max(norm - threshold, 0)``; each cell counted as a unit square, so a uniform map over a box of side L
    has std L / sqrt(12) and sigmas = sqrt(3) with threshold 0 returns that box).

    Args:
        norm: Tensor[B, h, w] in [0, 1] (the peak is 1). threshold: scalar or Tensor[B] in [0, 1).

    Returns:
        Tensor[B, 4] float.
    """
    b, h, w = norm.shape
    if isinstance(threshold, Tensor):
        threshold = threshold.to(device=norm.device, dtype=norm.dtype).reshape(-1, 1, 1)
    weights = (norm - threshold).clamp_min(0)
    weights = weights / weights.flatten(1).sum(dim=1).clamp_min(1e-12)[:, None, None]
    py, px = weights.sum(dim=2), weights.sum(dim=1)  # [B, h], [B, w]
    ys, xs = _pixel_centres(h, norm.device), _pixel_centres(w, norm.device)
    cy, cx = (py * ys).sum(dim=1), (px * xs).sum(dim=1)
    sy = ((py * (ys - cy[:, None]).pow(2)).sum(dim=1) + 1 / 12).sqrt()  # + the variance within a cell
    sx = ((px * (xs - cx[:, None]).pow(2)).sum(dim=1) + 1 / 12).sqrt()
    return torch.stack([cy - sigmas * sy, cx - sigmas * sx, cy + sigmas * sy, cx + sigmas * sx], dim=1)


def rule_boxes(
    attention: Tensor,
    rule: str,
    threshold: Tensor | float = 0.5,
    mass: float = 0.5,
    sigmas: float = 1.5,
    padding: float = 0.0,
    min_size: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Continuous boxes from maps on the grid the boxes are wanted in (resize coarse maps first,
    ``resize_attention``).

    Args:
        attention: Tensor[B, h, w] float (e.g. the mean of the M maps, resized to the image grid).
        rule: ``threshold`` (extent of ``attention >= threshold`` of the map's range), ``mass`` (per axis the
            shortest run holding ``mass`` of the attention) or ``moments`` (centre +- ``sigmas`` standard
            deviations of the attention above ``threshold``).
        threshold: scalar or Tensor[B] in [0, 1] (``threshold`` and ``moments`` rules).
        mass: fraction in (0, 1] (``mass`` rule). sigmas: > 0 (``moments`` rule).
        padding, min_size: as in ``grow_boxes``.

    Returns:
        (boxes Tensor[B, 4] float on the grid, degenerate Tensor[B] bool); degenerate maps give the whole frame.
    """
    b, h, w = attention.shape
    norm, degenerate = normalize_attention(attention)
    if rule == "threshold":
        boxes = threshold_extent(norm, threshold)
    elif rule == "mass":
        boxes = mass_extent(norm, mass)
    elif rule == "moments":
        boxes = moments_extent(norm, sigmas, threshold)
    else:
        raise ValueError(f"box rule {rule!r}: must be one of {RULES}")
    y0, x0, y1, x1 = grow_boxes(boxes, (h, w), padding, min_size).unbind(1)
    # Degenerate maps get the whole frame (filled with Python numbers: nothing copied to the device).
    d = degenerate
    y0, x0, y1, x1 = y0.masked_fill(d, 0), x0.masked_fill(d, 0), y1.masked_fill(d, h), x1.masked_fill(d, w)
    return torch.stack([y0, x0, y1, x1], dim=1), degenerate


def box_mask(boxes: Tensor, grid: tuple[int, int]) -> Tensor:
    """Tensor[B, h, w] bool: cells whose centre lies inside float boxes Tensor[B, 4] on ``grid``."""
    h, w = grid
    ys, xs = _pixel_centres(h, boxes.device), _pixel_centres(w, boxes.device)
    y0, x0, y1, x1 = (v[:, None] for v in boxes.float().unbind(1))
    rows = (ys >= y0) & (ys < y1)  # [B, h]
    cols = (xs >= x0) & (xs < x1)  # [B, w]
    return rows[:, :, None] & cols[:, None, :]


def region_boxes(attention: Tensor, num_regions: int, **rule_options) -> tuple[Tensor, Tensor]:
    """The ``num_regions`` most salient regions, greedily: each region's box comes from ``rule_boxes`` on the
    map with the earlier regions' boxes suppressed (set to the map's minimum), the non-maximum suppression
    of attention-crop methods. Regions therefore do not share cells except through padding/min_size.

    Args:
        attention: Tensor[B, h, w]. rule_options: ``rule_boxes`` keywords.

    Returns:
        (boxes Tensor[B, k, 4] float, degenerate Tensor[B, k] bool), most salient first.
    """
    grid = tuple(attention.shape[-2:])
    norm, _ = normalize_attention(attention)
    boxes, degenerate = [], []
    for _ in range(num_regions):
        box, flat = rule_boxes(norm, **rule_options)
        boxes.append(box)
        degenerate.append(flat)
        norm = norm.masked_fill(box_mask(box, grid), 0.0)
    return torch.stack(boxes, dim=1), torch.stack(degenerate, dim=1)


def scale_float_boxes(boxes: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    """Map float boxes Tensor[..., 4] from an ``src = (h, w)`` grid to a ``dst = (H, W)`` grid (same region)."""
    (h, w), (H, W) = src, dst
    factor = torch.tensor([H / h, W / w, H / h, W / w], device=boxes.device, dtype=torch.float32)
    return boxes.float() * factor
