"""Boxes from attention maps, batched: threshold boxes (WS-DAN/MMAL), fixed-size glimpses, and the
continuous rules ``threshold``, ``mass`` and ``moments`` (sub-cell boxes); k regions per map by suppression.

Boxes follow the convention of :mod:`fgzoom.ops.boxes`. Every public function checks its arguments on entry
(``box_checks``); the checks never read tensor values (a per-sample ``threshold`` tensor is not range-checked),
so they cost no device synchronisation.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from fgzoom.ops.box_checks import check_grid, check_maps, check_number, check_threshold
from fgzoom.ops.boxes import box_mask, cell_centres, grow_boxes, round_boxes
from fgzoom.ops.cell_geometry import resize_maps

__all__ = [
    "RULES",
    "glimpse_boxes",
    "mass_extent",
    "moments_extent",
    "normalize_attention",
    "region_boxes",
    "resize_attention",
    "rule_boxes",
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
    check_maps(attention, "attention")
    flat = attention.flatten(1).float()  # [B, h*w]
    finite = torch.isfinite(flat).all(dim=1)
    safe = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat))
    lo = safe.amin(dim=1, keepdim=True)
    hi = safe.amax(dim=1, keepdim=True)
    span = hi - lo
    degenerate = ~finite | (span.squeeze(1) <= 1e-12)
    norm = torch.where(degenerate[:, None], torch.ones_like(safe), (safe - lo) / span.clamp_min(1e-12))
    return norm.view_as(attention), degenerate


def resize_attention(attention: Tensor, grid: tuple[int, int], offset: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """Bilinearly resize cell maps to the image ``grid``, each cell centred where the backbone's cell ``offset``
    puts it (``fgzoom.ops.cell_geometry.resize_maps``; offset 0: ``F.interpolate`` with ``align_corners=False``;
    a no-op when already that size).

    Args:
        attention: ``Tensor[B, h, w]`` floating.
        grid: ``(H, W)`` positive ints.
        offset: ``(delta_y, delta_x)`` in cells.

    Returns:
        ``Tensor[B, H, W]``: ``attention`` itself when ``(h, w) == grid``, else float32.
    """
    return resize_maps(attention, grid, offset)


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
    check_maps(attention, "attention")
    b, h, w = attention.shape
    bh, bw = check_grid(size, "size")
    if not (bh <= h and bw <= w):
        raise ValueError(f"size={size!r}: a glimpse must fit the {h}x{w} grid (1 <= bh <= {h}, 1 <= bw <= {w})")
    norm, degenerate = normalize_attention(attention)
    peak = norm.flatten(1).argmax(dim=1)  # [B]
    py = torch.where(degenerate, torch.full_like(peak, h // 2), peak // w)
    px = torch.where(degenerate, torch.full_like(peak, w // 2), peak % w)
    y0 = (py - bh // 2).clamp(0, h - bh)
    x0 = (px - bw // 2).clamp(0, w - bw)
    return torch.stack([y0, x0, y0 + bh, x0 + bw], dim=1).long(), degenerate


# ---------------------------------------------------------------------------------------- continuous rules
def threshold_extent(norm: Tensor, threshold: Tensor | float) -> Tensor:
    """Bounding box of the cells with ``norm >= threshold``, on cell edges.

    Args:
        norm: ``Tensor[B, h, w]`` floating in [0, 1] with peak 1 (``normalize_attention``).
        threshold: number in [0, 1], or floating ``Tensor[B]`` (values not checked; above 1 acts as 1).

    Returns:
        ``Tensor[B, 4]`` float32 ``(y0, x0, y1, x1)``: the first and one past the last row and column holding
        a selected cell (the peak is always selected).
    """
    check_maps(norm, "norm")
    check_threshold(threshold, norm.shape[0], upper_open=False)
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
    check_maps(norm, "norm")
    check_number(mass, "mass", 0.0, 1.0, "a number in (0, 1] (fraction of the attention)", lo_open=True)
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
    check_maps(norm, "norm")
    check_number(sigmas, "sigmas", 0.0, math.inf, "a number > 0 (standard deviations)", lo_open=True)
    check_threshold(threshold, norm.shape[0], upper_open=True)
    b, h, w = norm.shape
    if isinstance(threshold, Tensor):
        threshold = threshold.to(device=norm.device, dtype=norm.dtype).reshape(-1, 1, 1)
    weights = (norm - threshold).clamp_min(0)
    weights = weights / weights.flatten(1).sum(dim=1).clamp_min(1e-12)[:, None, None]
    py, px = weights.sum(dim=2), weights.sum(dim=1)  # [B, h], [B, w]
    ys, xs = cell_centres(h, norm.device), cell_centres(w, norm.device)
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
    check_maps(attention, "attention")
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}: box rule must be one of {RULES}")
    check_threshold(threshold, attention.shape[0], upper_open=rule == "moments")
    check_number(mass, "mass", 0.0, 1.0, "a number in (0, 1] (fraction of the attention)", lo_open=True)
    check_number(sigmas, "sigmas", 0.0, math.inf, "a number > 0 (standard deviations)", lo_open=True)
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
    check_maps(attention, "attention")
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

