"""Candidate boxes (region proposals) from attention maps, batched: the peaks of the maps at a few scales,
made distinct by non-maximum suppression, a fixed number per sample.

The ``ranked`` box rule (``fgzoom.models.ranked_box``) scores these candidates and zooms the best; the ops here
only propose them. Every candidate is a square of side ``scale`` times the frame side (per axis), centred on a
peak's sub-cell centre placed in the image by the backbone's cell offset (``fgzoom.ops.cell_geometry``) and
slid inside the frame (its side kept). Boxes follow the convention of :mod:`fgzoom.ops.boxes`: float
``(y0, x0, y1, x1)`` on the image grid. No loop over the batch and no host synchronisation: the suppression
is a loop over the (few tens of) raw candidates, every sample at once, and the count per sample is fixed (the
kept candidates first, then the suppressed ones, each in order of priority).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fgzoom.ops.attention_boxes import normalize_attention
from fgzoom.ops.box_checks import check_box_array, check_grid, check_number, describe
from fgzoom.ops.cell_geometry import cells_to_image, check_offset

__all__ = ["attention_peaks", "attention_proposals", "greedy_nms", "pairwise_box_iou", "peak_boxes", "peak_centres"]


def _check_count(value: object, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}: must be an int >= 1")
    return int(value)


def pairwise_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box of ``a`` with every box of ``b``, per sample (torchvision's ``box_iou``, batched).

    Args:
        a: ``Tensor[B, N, 4]``, b: ``Tensor[B, M, 4]`` ``(y0, x0, y1, x1)``, float or integer.

    Returns:
        ``Tensor[B, N, M]`` float32, 0 where the union is empty.
    """
    check_box_array(a, "a")
    check_box_array(b, "b")
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0]:
        raise ValueError(f"a={describe(a)}, b={describe(b)}: must be Tensor[B, N, 4] and Tensor[B, M, 4]")
    a, b = a.float(), b.float()
    lo = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])  # [B, N, M, 2]
    hi = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (hi - lo).clamp_min(0).prod(dim=-1)  # [B, N, M]
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(dim=-1)  # [B, N]
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(dim=-1)  # [B, M]
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))


def greedy_nms(boxes: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression of boxes already in order of priority, every sample at once.

    Box ``j`` is kept unless a kept box before it overlaps it by IoU > ``iou_threshold`` (torchvision's
    ``nms`` rule, with the order given instead of scores), so kept boxes overlap each other by at most the
    threshold.

    Args:
        boxes: ``Tensor[B, N, 4]`` ``(y0, x0, y1, x1)``, most important first.
        iou_threshold: number in (0, 1].

    Returns:
        ``Tensor[B, N]`` bool, True for the kept boxes (the first is always kept).
    """
    check_box_array(boxes, "boxes")
    check_number(iou_threshold, "iou_threshold", 0.0, 1.0, "a number in (0, 1] (IoU)", lo_open=True)
    if boxes.dim() != 3:
        raise ValueError(f"boxes={describe(boxes)}: must be a Tensor[B, N, 4]")
    over = pairwise_box_iou(boxes, boxes) > iou_threshold  # [B, N, N]
    b, n = boxes.shape[:2]
    keep = torch.ones(b, n, dtype=torch.bool, device=boxes.device)
    for j in range(1, n):  # over the candidates, never the batch
        keep[:, j] = ~(over[:, :j, j] & keep[:, :j]).any(dim=1)
    return keep


def attention_peaks(maps: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` highest local maxima of each map, then (when a map has fewer) its highest other cells.

    A cell is a local maximum when no cell of its 3x3 neighbourhood is higher. Ties (a flat map) go to the
    cells nearest the middle of the grid.

    Args:
        maps: ``Tensor[B, h, w]`` floating.
        count: int >= 1; at most ``h * w`` cells are returned.

    Returns:
        ``(cells, degenerate)``: ``cells`` ``Tensor[B, min(count, h*w)]`` int64 flat indices ``y * w + x``, highest
        first; ``degenerate`` ``Tensor[B]`` bool (``normalize_attention``: a flat or non-finite map).
    """
    count = _check_count(count, "count")
    norm, degenerate = normalize_attention(maps)  # [B, h, w] in [0, 1]
    b, h, w = norm.shape
    is_max = norm >= F.max_pool2d(norm[:, None], 3, stride=1, padding=1)[:, 0]
    ys = (torch.arange(h, device=norm.device, dtype=torch.float32) + 0.5) / h - 0.5
    xs = (torch.arange(w, device=norm.device, dtype=torch.float32) + 0.5) / w - 0.5
    centre = ys[:, None] ** 2 + xs[None, :] ** 2  # [h, w] in [0, 0.5]
    key = norm + 2.0 * is_max.float() - 1e-3 * centre
    cells = key.flatten(1).topk(min(count, h * w), dim=1).indices  # [B, P]
    return cells, degenerate


def peak_centres(maps: Tensor, cells: Tensor) -> Tensor:
    """Sub-cell centres of peaks: the centroid of each peak's 3x3 neighbourhood, weighted by the map above the
    neighbourhood's minimum (cells outside the grid left out), so a peak cell alone stays at its centre and a
    peak shared by two cells lands between them.

    Args:
        maps: ``Tensor[B, h, w]`` floating (e.g. ``normalize_attention``'s maps).
        cells: ``Tensor[B, P]`` int64 flat indices ``y * w + x`` (``attention_peaks``).

    Returns:
        ``Tensor[B, P, 2]`` float32 ``(cy, cx)`` in cell coordinates (cell ``i`` spans ``[i, i + 1)``), within
        one cell of each peak cell's centre ``i + 0.5``.
    """
    if not isinstance(maps, Tensor) or maps.dim() != 3 or not maps.is_floating_point():
        raise ValueError(f"maps={describe(maps)}: must be a floating Tensor[B, h, w]")
    b, h, w = maps.shape
    index = cells[:, None, :].expand(-1, 9, -1)  # [B, 9, P]

    def neighbourhoods(x: Tensor) -> Tensor:  # [B, h, w] -> [B, 9, h*w], the 3x3 around each cell, row by row
        padded = F.pad(x, (1, 1, 1, 1))  # (F.unfold does this, but took 0.5 s on 128 small maps on a CPU)
        return torch.stack([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], dim=1).flatten(2)

    values = neighbourhoods(maps.float()).gather(2, index)  # [B, 9, P]
    inside = neighbourhoods(torch.ones_like(maps, dtype=torch.float32)).gather(2, index) > 0
    low = values.masked_fill(~inside, math.inf).amin(dim=1, keepdim=True)
    weights = ((values - low) * inside).clamp_min(0)  # [B, 9, P]
    step = torch.tensor([-1.0, 0.0, 1.0], device=maps.device)
    dy, dx = step.repeat_interleave(3)[None, :, None], step.repeat(3)[None, :, None]  # [1, 9, 1]
    total = weights.sum(dim=1).clamp_min(1e-12)  # [B, P]; 0 only for a flat neighbourhood: the cell's centre
    cy = torch.div(cells, w, rounding_mode="floor").float() + 0.5 + (weights * dy).sum(dim=1) / total
    cx = (cells % w).float() + 0.5 + (weights * dx).sum(dim=1) / total
    return torch.stack([cy, cx], dim=-1)


def peak_boxes(centres: Tensor, scales: Sequence[float], grid: tuple[int, int]) -> Tensor:
    """Squares of side ``scale`` times the frame side (per axis) about each centre, slid inside the frame.

    Args:
        centres: ``Tensor[B, Q, 2]`` ``(cy, cx)`` on ``grid`` (float).
        scales: numbers in (0, 1], fractions of the frame side.
        grid: ``(H, W)`` positive ints.

    Returns:
        ``Tensor[B, Q * S, 4]`` float32 ``(y0, x0, y1, x1)`` inside ``[0, H] x [0, W]``, the S scales of centre 0
        first.
    """
    H, W = check_grid(grid, "grid")
    if not isinstance(centres, Tensor) or centres.dim() != 3 or centres.shape[-1] != 2:
        raise ValueError(f"centres={describe(centres)}: must be a Tensor[B, Q, 2] of (cy, cx)")
    sides = _check_scales(scales)
    size = torch.tensor([H, W], device=centres.device, dtype=torch.float32)
    half = torch.tensor(sides, device=centres.device, dtype=torch.float32)[:, None] * size / 2  # [S, 2]
    centre = centres.float()[:, :, None, :]  # [B, Q, 1, 2]
    lo, hi = centre - half, centre + half  # [B, Q, S, 2]
    shift = (-lo).clamp_min(0) - (hi - size).clamp_min(0)  # slide inside the frame, keeping the side
    lo, hi = (lo + shift).clamp_min(0), torch.minimum(hi + shift, size)
    return torch.cat([lo, hi], dim=-1).flatten(1, 2)


def _check_scales(scales: object) -> list[float]:
    ok = isinstance(scales, Sequence) and not isinstance(scales, str) and len(scales) > 0 and all(
        isinstance(s, numbers.Real) and not isinstance(s, bool) and 0.0 < s <= 1.0 for s in scales)
    if not ok:
        raise ValueError(f"scales={scales!r}: must be a non-empty list of numbers in (0, 1] (fractions of the frame)")
    return [float(s) for s in scales]


def attention_proposals(
    maps: Tensor,
    grid: tuple[int, int],
    scales: Sequence[float],
    count: int,
    iou_threshold: float = 0.5,
    offset: tuple[float, float] = (0.0, 0.0),
) -> tuple[Tensor, Tensor]:
    """``count`` distinct candidate boxes per sample from its M attention maps.

    Centres: the ``ceil(count / S)`` highest local maxima of the mean map (``attention_peaks``) and, with M > 1,
    the highest cell of each of the M maps (the parts the mean blurs), each refined to sub-cell precision on its
    own map (``peak_centres``) and placed in the image where the backbone's cell ``offset`` puts it
    (``cells_to_image``). Each centre gives S boxes, one per scale (``peak_boxes``). Priority: the normalized mean map at the centre cell (stable: mean-map peaks, then the
    maps in order; scales in the order given). ``greedy_nms`` in that order; the kept boxes come first, then the
    suppressed ones (so the count is fixed), each in order of priority; a pool smaller than ``count`` (a grid
    of very few cells with one map) repeats itself.

    Args:
        maps: ``Tensor[B, M, h, w]`` floating, the attention maps on the cell grid.
        grid: ``(H, W)`` the image grid the boxes are wanted on.
        scales: S numbers in (0, 1], box sides as fractions of the frame side.
        count: C, boxes per sample, int >= 1.
        iou_threshold: number in (0, 1]: kept boxes overlap each other by at most this IoU.
        offset: ``(delta_y, delta_x)`` the backbone's cell offset in cells (``fgzoom.ops.cell_geometry``; not
            applied when ``grid`` is the maps' own grid).

    Returns:
        ``(boxes, degenerate)``: ``boxes`` ``Tensor[B, C, 4]`` float32 on ``grid``, inside the frame;
        ``degenerate`` ``Tensor[B]`` bool, a flat mean map (its candidates sit about the middle of the frame).
    """
    if not isinstance(maps, Tensor) or maps.dim() != 4 or not maps.is_floating_point():
        raise ValueError(f"maps={describe(maps)}: must be a floating Tensor[B, M, h, w]")
    H, W = check_grid(grid, "grid")
    count = _check_count(count, "count")
    sides = _check_scales(scales)
    check_number(iou_threshold, "iou_threshold", 0.0, 1.0, "a number in (0, 1] (IoU)", lo_open=True)
    dy, dx = check_offset(offset)
    b, m, h, w = maps.shape
    maps = maps.detach().float()
    mean = maps.mean(dim=1)  # [B, h, w]
    norm, _ = normalize_attention(mean)
    cells, degenerate = attention_peaks(mean, math.ceil(count / len(sides)))  # [B, P]
    centres = peak_centres(norm, cells)  # [B, P, 2] in cells
    if m > 1:
        per_map, _ = attention_peaks(maps.flatten(0, 1), 1)  # [B*M, 1]
        own = peak_centres(normalize_attention(maps.flatten(0, 1))[0], per_map).view(b, m, 2)
        cells = torch.cat([cells, per_map.view(b, m)], dim=1)  # [B, Q]
        centres = torch.cat([centres, own], dim=1)  # [B, Q, 2]
    priority = norm.flatten(1).gather(1, cells)  # [B, Q]
    points = torch.cat([centres, centres], dim=-1)  # [B, Q, 4] zero-size boxes at the centres
    # a grid of the maps' own size is their own grid (as resize_maps has it): no offset there
    offset = (0.0, 0.0) if (H, W) == (h, w) else (dy, dx)
    centres = cells_to_image(points, (h, w), (H, W), offset)[..., :2]  # [B, Q, 2]
    boxes = peak_boxes(centres, sides, (H, W))  # [B, Q*S, 4]
    priority = priority.repeat_interleave(len(sides), dim=1)  # [B, N]
    n = boxes.shape[1]
    # a stable descending sort as a topk (aten.sort's stable variant has no ONNX operator): ties in the given order
    position = torch.arange(n, device=boxes.device, dtype=torch.float64)
    order = (priority.double() - position * 1e-9).topk(n, dim=1).indices
    boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4))
    keep = greedy_nms(boxes, iou_threshold)
    rank = torch.arange(n, 0, -1, device=boxes.device)  # earlier = higher
    chosen = (keep.long() * (n + 1) + rank).topk(min(count, n), dim=1).indices  # [B, min(C, n)]
    if count > n:
        chosen = chosen[:, torch.arange(count, device=boxes.device) % n]
    return boxes.gather(1, chosen[..., None].expand(-1, -1, 4)), degenerate
