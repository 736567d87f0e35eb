"""Boxes from attention maps, batched: threshold boxes (WS-DAN/MMAL), fixed-size glimpses, and the
continuous rules ``threshold``, ``mass`` and ``moments`` (sub-cell boxes).

Box convention: ``(y0, x0, y1, x1)`` in the grid of a tensor, where 0 is the top/left edge of the first
cell and ``h``/``w`` the bottom/right edge of the last. Integer boxes (``Tensor[B, 4]`` int64, end-exclusive)
feed the exact ``slice`` sampler (``crop_resize``); float boxes (``Tensor[B, 4]`` float32) feed the
``affine`` sampler (``crop_affine``) and are rounded outward (``round_boxes``) for ``slice``. An integer box
means the same region as its float copy. No Python loop over the batch and no host synchronisation.

Every public function checks its arguments on entry and raises ``ValueError`` naming the argument, its
value and what is allowed. The checks read Python numbers and tensor shapes/dtypes only, never tensor
values (a per-sample ``threshold`` tensor is not range-checked), so they cost no device synchronisation.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "RULES",
    "matched_box_iou",
    "box_mask",
    "glimpse_boxes",
    "grow_boxes",
    "mass_extent",
    "moments_extent",
    "nest_boxes",
    "normalize_attention",
    "region_boxes",
    "resize_attention",
    "round_boxes",
    "rule_boxes",
    "scale_boxes",
    "scale_float_boxes",
    "threshold_boxes",
    "threshold_extent",
]

RULES = ("threshold", "mass", "moments")  # the rules rule_boxes computes


def normalize_attention(attention: Tensor) -> tuple[Tensor, Tensor]:
    """Scale each map to [0, 1] by its min and max and flag degenerate maps.

    Args:
        attention: ``Tensor[B, h, w]`` floating.

    Returns:
        ``(norm, degenerate)``: ``norm`` ``Tensor[B, h, w]`` float32 in [0, 1], ``(a - min) / (max - min)``
        per map; ``degenerate`` ``Tensor[B]`` bool, True for a map that is constant (``max - min <= 1e-12``),
        all zero, or holds NaN/Inf; such maps are returned as all ones (the whole frame).
    """
    _check_maps(attention, "attention")
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
    """Bilinearly resize maps to ``grid`` (``align_corners=False``; no-op when already that size).

    Args:
        attention: ``Tensor[B, h, w]`` floating.
        grid: ``(H, W)`` positive ints.

    Returns:
        ``Tensor[B, H, W]``: ``attention`` itself when ``(h, w) == grid``, else float32.
    """
    _check_maps(attention, "attention")
    grid = _check_grid(grid, "grid")
    if tuple(attention.shape[-2:]) == grid:
        return attention
    return F.interpolate(attention[:, None].float(), size=grid, mode="bilinear", align_corners=False)[:, 0]


def threshold_boxes(
    attention: Tensor,
    threshold: Tensor | float,
    padding: float = 0.0,
    min_size: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The bounding box of ``attention >= threshold`` (of each map's range) per sample in whole cells: the
    ``threshold`` rule of ``rule_boxes`` rounded outward (``round_boxes``).

    Args:
        attention: ``Tensor[B, h, w]`` floating, one map per sample (e.g. the mean over M maps).
        threshold: number in [0, 1], or floating ``Tensor[B]`` (values not checked), relative to each map's
            range (min..max).
        padding: number >= 0: grow each box by this fraction of its own height/width on every side.
        min_size: number in [0, 1]: smallest box side as a fraction of the frame side; smaller boxes grow
            about their centre.

    Returns:
        ``(boxes, degenerate)``: ``boxes`` ``Tensor[B, 4]`` int64 ``(y0, x0, y1, x1)``, end-exclusive, inside
        the ``h x w`` grid and non-empty; ``degenerate`` ``Tensor[B]`` bool. Degenerate maps give the whole
        frame.
    """
    boxes, degenerate = rule_boxes(attention, "threshold", threshold=threshold, padding=padding, min_size=min_size)
    return round_boxes(boxes, tuple(attention.shape[-2:])), degenerate


def glimpse_boxes(attention: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """A ``size = (bh, bw)`` box centred on each map's peak, shifted to lie inside the frame.

    All boxes have the same size, so ``crop_resize(..., scale_factor=...)`` is valid on them.

    Args:
        attention: ``Tensor[B, h, w]`` floating.
        size: ``(bh, bw)`` box height and width in grid cells, ints with ``1 <= bh <= h``, ``1 <= bw <= w``.

    Returns:
        ``(boxes, degenerate)``: ``boxes`` ``Tensor[B, 4]`` int64 ``(y0, x0, y1, x1)``, end-exclusive;
        ``degenerate`` ``Tensor[B]`` bool; degenerate maps get a centred box.
    """
    _check_maps(attention, "attention")
    b, h, w = attention.shape
    bh, bw = _check_grid(size, "size")
    if not (bh <= h and bw <= w):
        raise ValueError(f"size={size!r}: a glimpse must fit the {h}x{w} grid (1 <= bh <= {h}, 1 <= bw <= {w})")
    norm, degenerate = normalize_attention(attention)
    peak = norm.flatten(1).argmax(dim=1)  # [B]
    py = torch.where(degenerate, torch.full_like(peak, h // 2), peak // w)
    px = torch.where(degenerate, torch.full_like(peak, w // 2), peak % w)
    y0 = (py - bh // 2).clamp(0, h - bh)
    x0 = (px - bw // 2).clamp(0, w - bw)
    return torch.stack([y0, x0, y0 + bh, x0 + bw], dim=1).long(), degenerate


def grow_boxes(boxes: Tensor, grid: tuple[int, int], padding: float, min_size: float) -> Tensor:
    """Grow float boxes by ``padding`` and to at least ``min_size``, inside ``grid``. Continuous: no rounding.

    Each side moves out by ``padding`` times the box's height (top/bottom) or width (left/right), and the box
    is clipped to the frame. A side shorter than ``min_size`` times the frame side then grows to it about the
    box's centre, shifted (not clipped) to stay inside the frame; longer sides stay as they are.

    Args:
        boxes: ``Tensor[B, 4]`` ``(y0, x0, y1, x1)`` in grid coordinates (any real dtype).
        grid: ``(h, w)`` positive ints.
        padding: number >= 0.
        min_size: number in [0, 1].

    Returns:
        ``Tensor[B, 4]`` float32, inside ``[0, h] x [0, w]``.
    """
    _check_boxes(boxes, "boxes")
    h, w = _check_grid(grid, "grid")
    _check_number(padding, "padding", 0.0, math.inf, "a number >= 0 (fraction of the box side)")
    _check_number(min_size, "min_size", 0.0, 1.0, "a number in [0, 1] (fraction of the frame side)")
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
    """Round float boxes outward to whole cells of ``grid``: the region the ``slice`` sampler crops.

    ``y0 = clamp(floor(y0), 0, h - 1)``, ``y1 = max(clamp(ceil(y1), 1, h), y0 + 1)`` (the same along x), so
    every box is inside the grid and at least one cell.

    Args:
        boxes: ``Tensor[B, 4]`` ``(y0, x0, y1, x1)`` in grid coordinates (any real dtype).
        grid: ``(h, w)`` positive ints.

    Returns:
        ``Tensor[B, 4]`` int64, end-exclusive, ``0 <= y0 < y1 <= h`` and ``0 <= x0 < x1 <= w``.
    """
    _check_boxes(boxes, "boxes")
    h, w = _check_grid(grid, "grid")
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
    """Map integer boxes from an ``src = (h, w)`` grid to a ``dst = (H, W)`` grid, rounding outward so the
    mapped box covers the same region.

    Exact integer arithmetic: ``floor(y0 * H / h)`` and ``ceil(y1 * H / h)`` (clipped to ``H``, at least one
    cell), no float rounding.

    Args:
        boxes: ``Tensor[B, 4]`` integer ``(y0, x0, y1, x1)``, end-exclusive, inside ``src``.
        src: ``(h, w)`` positive ints. dst: ``(H, W)`` positive ints.

    Returns:
        ``Tensor[B, 4]`` int64 on ``dst``.
    """
    _check_boxes(boxes, "boxes", integer=True)
    h, w = _check_grid(src, "src")
    H, W = _check_grid(dst, "dst")
    y0, x0, y1, x1 = boxes.long().unbind(1)  # [B] each, non-negative
    y0, x0 = torch.div(y0 * H, h, rounding_mode="floor"), torch.div(x0 * W, w, rounding_mode="floor")
    y1 = -torch.div(-y1 * H, h, rounding_mode="floor")  # ceil
    x1 = -torch.div(-x1 * W, w, rounding_mode="floor")
    y1 = torch.maximum(y1.clamp(max=H), y0 + 1)
    x1 = torch.maximum(x1.clamp(max=W), x0 + 1)
    return torch.stack([y0, x0, y1, x1], dim=1)


def matched_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of matched boxes, row ``i`` of ``a`` with row ``i`` of ``b`` (torchvision's ``box_iou`` is all pairs).

    Args:
        a, b: ``Tensor[N, 4]`` ``(y0, x0, y1, x1)``, float or integer, the same ``N``.

    Returns:
        ``Tensor[N]`` float64: ``|a_i & b_i| / |a_i | b_i|``, 0 where the union is empty.
    """
    _check_boxes(a, "a")
    _check_boxes(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"b of shape {tuple(b.shape)}: must match a of shape {tuple(a.shape)} (one pair per row)")
    a, b = a.double(), b.double()
    ih = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    iw = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = ih * iw
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))


# ---------------------------------------------------------------------------------------- continuous rules
def _pixel_centres(n: int, device: torch.device) -> Tensor:
    """Tensor[n] float: the continuous coordinate of each cell's centre (i + 0.5)."""
    return torch.arange(n, device=device, dtype=torch.float32) + 0.5


def threshold_extent(norm: Tensor, threshold: Tensor | float) -> Tensor:
    """Bounding box of the cells with ``norm >= threshold``, on cell edges.

    Args:
        norm: ``Tensor[B, h, w]`` floating in [0, 1] with peak 1 (``normalize_attention``).
        threshold: number in [0, 1], or floating ``Tensor[B]`` (values not checked; above 1 acts as 1).

    Returns:
        ``Tensor[B, 4]`` float32 ``(y0, x0, y1, x1)``: the first and one past the last row and column holding
        a selected cell (the peak is always selected).
    """
    _check_maps(norm, "norm")
    _check_threshold(threshold, norm.shape[0], upper_open=False)
    b, h, w = norm.shape
    if isinstance(threshold, Tensor):
        thr = threshold.to(device=norm.device, dtype=norm.dtype).reshape(-1, 1, 1).clamp(max=1.0)
    else:  # a Python number stays a kernel argument: no tensor copied to the device (a sync on CUDA)
        thr = float(threshold)
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
    """Per axis, the shortest run of cells holding ``mass`` of the map's marginal on that axis.

    The marginal along y is ``norm.sum(x)`` (and along x ``norm.sum(y)``); a run ``[s, e)`` holds
    ``sum(marginal[s:e]) / sum(marginal)``. Among the shortest runs holding at least ``mass`` (up to 1e-6),
    the one holding the most is taken, and among those the first.

    Args:
        norm: ``Tensor[B, h, w]`` floating, non-negative (``normalize_attention``: the map's minimum
            subtracted).
        mass: number in (0, 1].

    Returns:
        ``Tensor[B, 4]`` float32 ``(y0, x0, y1, x1)`` on cell edges.
    """
    _check_maps(norm, "norm")
    _check_number(mass, "mass", 0.0, 1.0, "a number in (0, 1] (fraction of the attention)", lo_open=True)
    y0, y1 = _shortest_interval(norm.sum(dim=2), mass)
    x0, x1 = _shortest_interval(norm.sum(dim=1), mass)
    return torch.stack([y0, x0, y1, x1], dim=1)


def moments_extent(norm: Tensor, sigmas: float, threshold: Tensor | float = 0.0) -> Tensor:
    """Centre +- ``sigmas`` standard deviations per axis of the attention above ``threshold``.

    Weights ``max(norm - threshold, 0)``, normalized to sum 1; each cell counts as a unit square (centre
    ``i + 0.5``, variance ``1/12`` within the cell), so a uniform map over a box of side L has std
    ``L / sqrt(12)`` and ``sigmas = sqrt(3)`` with threshold 0 returns that box.

    Args:
        norm: ``Tensor[B, h, w]`` floating in [0, 1] with peak 1 (``normalize_attention``).
        sigmas: number > 0.
        threshold: number in [0, 1), or floating ``Tensor[B]`` (values not checked).

    Returns:
        ``Tensor[B, 4]`` ``(cy - sigmas * sy, cx - sigmas * sx, cy + sigmas * sy, cx + sigmas * sx)``, float32
        (float64 for float64 maps); may reach outside the grid (``rule_boxes`` clips it).
    """
    _check_maps(norm, "norm")
    _check_number(sigmas, "sigmas", 0.0, math.inf, "a number > 0 (standard deviations)", lo_open=True)
    _check_threshold(threshold, norm.shape[0], upper_open=True)
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
    sigmas: float = 1.0,
    padding: float = 0.0,
    min_size: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Continuous boxes from maps on the grid the boxes are wanted in (resize coarse maps first,
    ``resize_attention``): the rule's extent of the normalized map, grown by ``grow_boxes``.

    Args:
        attention: ``Tensor[B, h, w]`` floating (e.g. the mean of the M maps, resized to the image grid).
        rule: one of ``RULES``: ``threshold`` (``threshold_extent``: extent of ``attention >= threshold`` of
            the map's range), ``mass`` (``mass_extent``: per axis the shortest run holding ``mass`` of the
            attention) or ``moments`` (``moments_extent``: centre +- ``sigmas`` standard deviations of the
            attention above ``threshold``).
        threshold: number in [0, 1] ([0, 1) for ``moments``), or floating ``Tensor[B]`` (values not checked).
        mass: number in (0, 1]. sigmas: number > 0. Both are checked whatever the rule.
        padding, min_size: as in ``grow_boxes``.

    Returns:
        ``(boxes, degenerate)``: ``boxes`` ``Tensor[B, 4]`` float32 on the grid, inside ``[0, h] x [0, w]``;
        ``degenerate`` ``Tensor[B]`` bool; degenerate maps give the whole frame.
    """
    _check_maps(attention, "attention")
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}: box rule must be one of {RULES}")
    _check_threshold(threshold, attention.shape[0], upper_open=rule == "moments")
    _check_number(mass, "mass", 0.0, 1.0, "a number in (0, 1] (fraction of the attention)", lo_open=True)
    _check_number(sigmas, "sigmas", 0.0, math.inf, "a number > 0 (standard deviations)", lo_open=True)
    b, h, w = attention.shape
    norm, degenerate = normalize_attention(attention)
    if rule == "threshold":
        boxes = threshold_extent(norm, threshold)
    elif rule == "mass":
        boxes = mass_extent(norm, mass)
    else:
        boxes = moments_extent(norm, sigmas, threshold)
    y0, x0, y1, x1 = grow_boxes(boxes, (h, w), padding, min_size).unbind(1)
    # Degenerate maps get the whole frame (filled with Python numbers: nothing copied to the device).
    d = degenerate
    y0, x0, y1, x1 = y0.masked_fill(d, 0), x0.masked_fill(d, 0), y1.masked_fill(d, h), x1.masked_fill(d, w)
    return torch.stack([y0, x0, y1, x1], dim=1), degenerate


def box_mask(boxes: Tensor, grid: tuple[int, int]) -> Tensor:
    """The cells whose centre ``(i + 0.5, j + 0.5)`` lies inside each box (``y0 <= i + 0.5 < y1``, same in x).

    Args:
        boxes: ``Tensor[B, 4]`` ``(y0, x0, y1, x1)`` in grid coordinates (any real dtype).
        grid: ``(h, w)`` positive ints.

    Returns:
        ``Tensor[B, h, w]`` bool.
    """
    _check_boxes(boxes, "boxes")
    h, w = _check_grid(grid, "grid")
    ys, xs = _pixel_centres(h, boxes.device), _pixel_centres(w, boxes.device)
    y0, x0, y1, x1 = (v[:, None] for v in boxes.float().unbind(1))
    rows = (ys >= y0) & (ys < y1)  # [B, h]
    cols = (xs >= x0) & (xs < x1)  # [B, w]
    return rows[:, :, None] & cols[:, None, :]


def region_boxes(
    attention: Tensor,
    num_regions: int,
    rule: str,
    threshold: Tensor | float = 0.5,
    mass: float = 0.5,
    sigmas: float = 1.0,
    padding: float = 0.0,
    min_size: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The ``num_regions`` most salient regions, greedily (the non-maximum suppression of attention-crop
    methods).

    Region 1 is ``rule_boxes`` of the map normalized by ``normalize_attention``; each next region is
    ``rule_boxes`` of that normalized map with the cells of the earlier boxes (``box_mask``) set to 0, its
    minimum. Regions therefore do not share cells except through ``padding``/``min_size``.

    Args:
        attention: ``Tensor[B, h, w]`` floating.
        num_regions: int >= 1.
        rule, threshold, mass, sigmas, padding, min_size: as in ``rule_boxes``.

    Returns:
        ``(boxes, degenerate)``: ``boxes`` ``Tensor[B, k, 4]`` float32, ``degenerate`` ``Tensor[B, k]`` bool,
        most salient first (``k = num_regions``).
    """
    _check_maps(attention, "attention")
    if not isinstance(num_regions, numbers.Integral) or isinstance(num_regions, bool) or num_regions < 1:
        raise ValueError(f"num_regions={num_regions!r}: must be an int >= 1")
    grid = tuple(attention.shape[-2:])
    norm, _ = normalize_attention(attention)
    options = dict(rule=rule, threshold=threshold, mass=mass, sigmas=sigmas, padding=padding, min_size=min_size)
    boxes, degenerate = [], []
    for _ in range(num_regions):
        box, flat = rule_boxes(norm, **options)
        boxes.append(box)
        degenerate.append(flat)
        norm = norm.masked_fill(box_mask(box, grid), 0.0)
    return torch.stack(boxes, dim=1), torch.stack(degenerate, dim=1)


def scale_float_boxes(boxes: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    """Map float boxes from an ``src = (h, w)`` grid to a ``dst = (H, W)`` grid (the same region).

    Args:
        boxes: ``Tensor[..., 4]`` ``(y0, x0, y1, x1)`` in ``src`` grid coordinates (any real dtype).
        src: ``(h, w)`` positive ints. dst: ``(H, W)`` positive ints.

    Returns:
        ``Tensor[..., 4]`` float32: ``y * H / h`` and ``x * W / w``.
    """
    if not isinstance(boxes, Tensor) or boxes.dim() < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes={_describe(boxes)}: must be a Tensor[..., 4] of (y0, x0, y1, x1)")
    h, w = _check_grid(src, "src")
    H, W = _check_grid(dst, "dst")
    factor = torch.tensor([H / h, W / w, H / h, W / w], device=boxes.device, dtype=torch.float32)
    return boxes.float() * factor


def nest_boxes(outer: Tensor, inner: Tensor, inner_grid: tuple[int, int]) -> Tensor:
    """Boxes chosen inside a zoomed view, on the grid the view was cropped from.

    The view of ``outer`` spans exactly that box (``crop_affine``'s convention), resized to ``inner_grid``;
    ``inner`` is a box on the view's grid. Returns it on ``outer``'s grid: ``y0 + y * (y1 - y0) / H``.

    Args:
        outer: ``Tensor[..., 4]`` float ``(y0, x0, y1, x1)``, the cropped boxes on the source grid.
        inner: ``Tensor[..., 4]`` float, boxes on the views' ``inner_grid = (H, W)``, same leading shape.

    Returns:
        ``Tensor[..., 4]`` float32 on the source grid, inside ``outer`` when ``inner`` is inside the view.
    """
    if not isinstance(outer, Tensor) or outer.dim() < 1 or outer.shape[-1] != 4:
        raise ValueError(f"outer={_describe(outer)}: must be a Tensor[..., 4] of (y0, x0, y1, x1)")
    if not isinstance(inner, Tensor) or inner.shape != outer.shape:
        raise ValueError(f"inner={_describe(inner)}: must be a Tensor of outer's shape {tuple(outer.shape)}")
    h, w = _check_grid(inner_grid, "inner_grid")
    outer = outer.float()
    start = outer[..., :2].repeat(*([1] * (outer.dim() - 1)), 2)  # (y0, x0, y0, x0)
    side = (outer[..., 2:] - outer[..., :2]).repeat(*([1] * (outer.dim() - 1)), 2)
    per_cell = torch.tensor([1 / h, 1 / w, 1 / h, 1 / w], device=outer.device)
    return start + inner.float() * per_cell * side


# ---------------------------------------------------------------------------------------- argument checks
def _describe(value: object) -> str:
    """A tensor's shape and dtype (never its values), or a short repr of anything else."""
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)} {value.dtype}"
    return repr(value)


def _check_maps(maps: object, name: str) -> None:
    """``maps`` must be a floating ``Tensor[B, h, w]`` with ``h, w >= 1``."""
    if not isinstance(maps, Tensor) or maps.dim() != 3 or maps.shape[1] < 1 or maps.shape[2] < 1:
        raise ValueError(f"{name}={_describe(maps)}: must be a Tensor[B, h, w] of maps with h, w >= 1")
    if not maps.is_floating_point():
        raise ValueError(f"{name}={_describe(maps)}: must have a floating dtype; convert it with .float()")


def _check_boxes(boxes: object, name: str, *, integer: bool = False) -> None:
    """``boxes`` must be a real ``Tensor[N, 4]`` (an integer one if ``integer``)."""
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}={_describe(boxes)}: must be a Tensor[N, 4] of (y0, x0, y1, x1)")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise ValueError(f"{name}={_describe(boxes)}: must have a real (integer or floating) dtype")
    if integer and boxes.is_floating_point():
        raise ValueError(f"{name}={_describe(boxes)}: must have an integer dtype; round float boxes (round_boxes)")


def _check_grid(grid: object, name: str) -> tuple[int, int]:
    """``grid`` must be a pair of positive ints (tuple, list or ``torch.Size``); returns it as a tuple."""
    ok = (
        isinstance(grid, (tuple, list))
        and len(grid) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in grid)
    )
    if not ok:
        raise ValueError(f"{name}={grid!r}: must be a pair (h, w) of ints >= 1")
    return int(grid[0]), int(grid[1])


def _check_number(
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


def _check_threshold(threshold: object, batch: int, *, upper_open: bool) -> None:
    """A number in [0, 1] ([0, 1) if ``upper_open``), or a floating ``Tensor[B]`` / one-element tensor whose
    values are not read (that would synchronise the device)."""
    if isinstance(threshold, Tensor):
        if not threshold.is_floating_point() or threshold.dim() > 1 or threshold.numel() not in (1, batch):
            raise ValueError(
                f"threshold={_describe(threshold)}: a threshold tensor must be a floating Tensor[B] (B={batch}) "
                "or hold one value"
            )
        return
    allowed = "a number in [0, 1) or a Tensor[B]" if upper_open else "a number in [0, 1] or a Tensor[B]"
    ok = isinstance(threshold, numbers.Real) and not isinstance(threshold, bool) and 0.0 <= threshold <= 1.0
    if not ok or (upper_open and threshold >= 1.0):
        raise ValueError(f"threshold={threshold!r}: must be {allowed} (fraction of each map's range)")
