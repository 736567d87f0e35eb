"""Box geometry, batched: grow, round outward, move between grids, nest, rasterize, and the elementwise IoU.

Box convention: ``(y0, x0, y1, x1)`` in the grid of a tensor, where 0 is the top/left edge of the first
cell and ``h``/``w`` the bottom/right edge of the last. Integer boxes (``Tensor[B, 4]`` int64, end-exclusive)
feed the exact ``slice`` sampler (``crop_resize``); float boxes (``Tensor[B, 4]`` float32) feed the
``affine`` sampler (``crop_affine``) and are rounded outward (``round_boxes``) for ``slice``. An integer box
means the same region as its float copy. No Python loop over the batch and no host synchronisation.

Every public function checks its arguments on entry (``box_checks``): a ``ValueError`` names the argument, its
value and what is allowed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fgzoom.ops.box_checks import check_box_array, check_boxes, check_grid, check_number, describe

__all__ = [
    "box_mask",
    "boxes_to_source",
    "grow_boxes",
    "matched_box_iou",
    "nest_boxes",
    "round_boxes",
    "scale_boxes",
    "scale_float_boxes",
]


def cell_centres(n: int, device: torch.device) -> Tensor:
    """Tensor[n] float: the continuous coordinate of each cell's centre (i + 0.5)."""
    return torch.arange(n, device=device, dtype=torch.float32) + 0.5


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
    check_boxes(boxes, "boxes")
    h, w = check_grid(grid, "grid")
    check_number(padding, "padding", 0.0, math.inf, "a number >= 0 (fraction of the box side)")
    check_number(min_size, "min_size", 0.0, 1.0, "a number in [0, 1] (fraction of the frame side)")
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
    check_boxes(boxes, "boxes")
    h, w = check_grid(grid, "grid")
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
    check_boxes(boxes, "boxes", integer=True)
    h, w = check_grid(src, "src")
    H, W = check_grid(dst, "dst")
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
    check_boxes(a, "a")
    check_boxes(b, "b")
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


def box_mask(boxes: Tensor, grid: tuple[int, int]) -> Tensor:
    """The cells whose centre ``(i + 0.5, j + 0.5)`` lies inside each box (``y0 <= i + 0.5 < y1``, same in x).

    Args:
        boxes: ``Tensor[B, 4]`` ``(y0, x0, y1, x1)`` in grid coordinates (any real dtype).
        grid: ``(h, w)`` positive ints.

    Returns:
        ``Tensor[B, h, w]`` bool.
    """
    check_boxes(boxes, "boxes")
    h, w = check_grid(grid, "grid")
    ys, xs = cell_centres(h, boxes.device), cell_centres(w, boxes.device)
    y0, x0, y1, x1 = (v[:, None] for v in boxes.float().unbind(1))
    rows = (ys >= y0) & (ys < y1)  # [B, h]
    cols = (xs >= x0) & (xs < x1)  # [B, w]
    return rows[:, :, None] & cols[:, None, :]


def scale_float_boxes(boxes: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    """Map float boxes from an ``src = (h, w)`` grid to a ``dst = (H, W)`` grid (the same region).

    Args:
        boxes: ``Tensor[..., 4]`` ``(y0, x0, y1, x1)`` in ``src`` grid coordinates (any real dtype).
        src: ``(h, w)`` positive ints. dst: ``(H, W)`` positive ints.

    Returns:
        ``Tensor[..., 4]`` float32: ``y * H / h`` and ``x * W / w``.
    """
    check_box_array(boxes, "boxes")
    h, w = check_grid(src, "src")
    H, W = check_grid(dst, "dst")
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
    check_box_array(outer, "outer")
    if not isinstance(inner, Tensor) or inner.shape != outer.shape:
        raise ValueError(f"inner={describe(inner)}: must be a Tensor of outer's shape {tuple(outer.shape)}")
    h, w = check_grid(inner_grid, "inner_grid")
    outer = outer.float()
    start = outer[..., :2].repeat(*([1] * (outer.dim() - 1)), 2)  # (y0, x0, y0, x0)
    side = (outer[..., 2:] - outer[..., :2]).repeat(*([1] * (outer.dim() - 1)), 2)
    per_cell = torch.tensor([1 / h, 1 / w, 1 / h, 1 / w], device=outer.device)
    return start + inner.float() * per_cell * side



def boxes_to_source(boxes: Tensor, frames: Tensor, sizes: Tensor | None = None) -> Tensor:
    """Boxes on transformed images, back on the images they came from, one axis-aligned map per sample.

    Sample ``i``'s transform put the source point ``(y, x)`` at ``(y * sy + ty, x * sx + tx)`` with
    ``frames[i] = (sy, ty, sx, tx)`` (a resize, crop or flip, or a chain of them:
    ``fgzoom.data.transforms.BoxFollowingCompose.frame``); this maps a box the other way,
    ``y = (y' - ty) / sy``, swapping the edges where a scale is negative (a flip).

    Args:
        boxes: ``Tensor[N, 4]`` or ``Tensor[N, ..., 4]`` ``(y0, x0, y1, x1)`` continuous edges on the transformed
            images (integer end-exclusive boxes are the same edges), any real dtype.
        frames: ``Tensor[N, 4]`` floating ``(sy, ty, sx, tx)`` per sample; scales nonzero.
        sizes: ``Tensor[N, 2]`` ``(H, W)`` of each source image, or None: the boxes are clamped to
            ``[0, H] x [0, W]`` (float rounding can reach past the edge), or not clamped.

    Returns:
        ``Tensor[N, ..., 4]`` float32 ``(y0, x0, y1, x1)`` in source pixels, computed in float64.
    """
    check_box_array(boxes, "boxes")
    if boxes.dim() < 2:
        raise ValueError(f"boxes={describe(boxes)}: must be a Tensor[N, ..., 4] (one row of boxes per frame)")
    n = boxes.shape[0]
    if not isinstance(frames, Tensor) or frames.shape != (n, 4) or not frames.is_floating_point():
        raise ValueError(f"frames={describe(frames)}: must be a floating Tensor[{n}, 4] of (sy, ty, sx, tx), one per "
                         "box row")
    if sizes is not None and (not isinstance(sizes, Tensor) or sizes.shape != (n, 2)):
        raise ValueError(f"sizes={describe(sizes)}: must be a Tensor[{n}, 2] of (H, W) or None")
    shape = (n,) + (1,) * (boxes.dim() - 1)  # broadcast a sample's numbers over its boxes' edges
    frames = frames.to(boxes.device, torch.float64)
    sy, ty, sx, tx = (v.reshape(shape) for v in frames.unbind(1))
    b = boxes.double()
    ys = (b[..., 0::2] - ty) / sy + 0.0  # [N, ..., 2] (y0, y1); + 0.0: a flipped edge 0 is -0.0, not 0
    xs = (b[..., 1::2] - tx) / sx + 0.0
    ys = torch.where(sy < 0, ys.flip(-1), ys)  # a flip swaps the edges
    xs = torch.where(sx < 0, xs.flip(-1), xs)
    if sizes is not None:
        sizes = sizes.to(boxes.device, torch.float64)
        h, w = (v.reshape(shape) for v in sizes.unbind(1))
        ys = torch.minimum(ys.clamp_min(0.0), h)
        xs = torch.minimum(xs.clamp_min(0.0), w)
    return torch.stack([ys[..., 0], xs[..., 0], ys[..., 1], xs[..., 1]], dim=-1).float()
