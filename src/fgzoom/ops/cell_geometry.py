"""Where a feature cell sits in the image: the cell offset, and the maps and boxes that move between the two grids.

A backbone's feature grid of ``h`` cells over an image of ``H`` pixels has cells ``H / h`` pixels apart, but
the receptive field of cell ``i`` is not always centred at the middle of its block of pixels: padding and
pooling put it elsewhere (a timm ResNet's stride-2 convolutions centre it on the block's first pixel, TF
"same" padding on its last). The **cell offset** ``delta`` (per axis, in cells) says where: cell ``i``'s
receptive field is centred at the continuous image coordinate

    c_i = (i + 0.5 + delta) * H / h            (0 = the image's top/left edge)

``delta = 0`` is the plain resize rule (``F.interpolate`` with ``align_corners=False``), which every function
here reproduces exactly. Boxes move between the grids by a piecewise linear map per axis (``cells_to_image``):
between the first and the last cell centre a cell coordinate ``u`` (cell ``i`` spans ``[i, i + 1)``) is the
image coordinate ``(u + delta) * H / h``, so a one-cell box of an interior cell is centred on its receptive
field; the outer half cells stretch or shrink so that the frame stays the frame (a whole-image box is the
whole grid). ``|delta| <= 0.5``. The offset is measured per backbone (``fgzoom.models.backbone_split.geometry``).

Box convention: ``(y0, x0, y1, x1)`` as in :mod:`fgzoom.ops.boxes`. No loop over the batch, no host sync.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fgzoom.ops.box_checks import check_box_array, check_grid, check_maps
from fgzoom.ops.boxes import scale_float_boxes

__all__ = ["cells_to_image", "check_offset", "image_to_cells", "is_zero_offset", "linear_weights", "resize_maps"]

Offset = tuple[float, float]


def check_offset(offset: Offset, name: str = "offset") -> Offset:
    """``(delta_y, delta_x)`` as two finite floats, in cells; ``ValueError`` naming ``name`` otherwise."""
    try:
        dy, dx = (float(v) for v in offset)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={offset!r}: must be (delta_y, delta_x), two numbers in cells") from None
    if not (abs(dy) < 1e6 and abs(dx) < 1e6):
        raise ValueError(f"{name}={offset!r}: must be finite numbers (cells)")
    return dy, dx


def is_zero_offset(offset: Offset) -> bool:
    """Whether ``offset`` is the plain resize rule (both components 0)."""
    return offset[0] == 0.0 and offset[1] == 0.0


def linear_weights(n_in: int, n_out: int, delta: float, device: torch.device | None = None) -> Tensor:
    """Tensor[n_out, n_in] float32: linear interpolation from ``n_in`` cells to ``n_out`` pixels with cell
    ``i`` centred at ``(i + 0.5 + delta) * n_out / n_in``.

    Output pixel ``p`` reads the cells at ``u = (p + 0.5) * n_in / n_out - 0.5 - delta``, clamped to
    ``[0, n_in - 1]`` (the edge cells extend, as ``F.interpolate`` does); with ``delta = 0`` this is
    ``F.interpolate``'s linear rule with ``align_corners=False``.
    """
    p = torch.arange(n_out, device=device, dtype=torch.float64)
    u = ((p + 0.5) * (n_in / n_out) - 0.5 - delta).clamp(0, n_in - 1)  # [n_out]
    lo = u.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = (u - lo).float()
    weights = torch.zeros(n_out, n_in, device=device, dtype=torch.float32)
    rows = torch.arange(n_out, device=device)
    weights.index_put_((rows, lo), 1 - frac, accumulate=True)
    weights.index_put_((rows, hi), frac, accumulate=True)
    return weights


def resize_maps(maps: Tensor, grid: tuple[int, int], offset: Offset = (0.0, 0.0)) -> Tensor:
    """Bilinearly resize cell maps to the image ``grid``, cell ``i`` centred where ``offset`` puts it.

    Args:
        maps: ``Tensor[B, h, w]`` floating.
        grid: ``(H, W)`` positive ints.
        offset: ``(delta_y, delta_x)`` in cells (module docstring); ``(0, 0)`` = ``F.interpolate(...,
            mode="bilinear", align_corners=False)`` exactly.

    Returns:
        ``Tensor[B, H, W]``: ``maps`` itself when ``(h, w) == grid`` (a grid of the map's own size is the map's
        own grid: the offset places cells in a finer image grid), else float32.
    """
    check_maps(maps, "maps")
    grid = check_grid(grid, "grid")
    dy, dx = check_offset(offset)
    h, w = maps.shape[-2:]
    if (h, w) == grid:
        return maps
    if is_zero_offset((dy, dx)):
        return F.interpolate(maps[:, None].float(), size=grid, mode="bilinear", align_corners=False)[:, 0]
    rows = linear_weights(h, grid[0], dy, maps.device)  # [H, h]
    cols = linear_weights(w, grid[1], dx, maps.device)  # [W, w]
    return torch.einsum("Hh,bhw,Ww->bHW", rows, maps.float(), cols)


def _knots(cells: int, pixels: int, delta: float) -> tuple[float, float, float]:
    """Image coordinates of the first and last cell centres and the cell pitch ``pixels / cells``."""
    pitch = pixels / cells
    return (0.5 + delta) * pitch, (cells - 0.5 + delta) * pitch, pitch


def _cells_to_pixels(u: Tensor, cells: int, pixels: int, delta: float) -> Tensor:
    """Cell coordinates -> image coordinates along one axis, piecewise linear through the knots
    ``0 -> 0``, ``0.5 -> first centre``, ``cells - 0.5 -> last centre``, ``cells -> pixels``."""
    first, last, pitch = _knots(cells, pixels, delta)
    head = u * (first / 0.5)
    tail = last + (u - (cells - 0.5)) * ((pixels - last) / 0.5)
    return torch.where(u < 0.5, head, torch.where(u > cells - 0.5, tail, first + (u - 0.5) * pitch))


def _pixels_to_cells(y: Tensor, cells: int, pixels: int, delta: float) -> Tensor:
    """The inverse of ``_cells_to_pixels``."""
    first, last, pitch = _knots(cells, pixels, delta)
    head = y * (0.5 / max(first, 1e-6))
    tail = (cells - 0.5) + (y - last) * (0.5 / max(pixels - last, 1e-6))
    return torch.where(y < first, head, torch.where(y > last, tail, 0.5 + (y - first) / pitch))


def _map_boxes(boxes: Tensor, src: tuple[int, int], dst: tuple[int, int], offset: Offset, to_image: bool,
               clip: bool) -> Tensor:
    """``cells_to_image`` (``to_image``: src = cells, dst = image) or ``image_to_cells`` (src = image, dst = cells)."""
    check_box_array(boxes, "boxes")
    h, w = check_grid(src, "src")
    H, W = check_grid(dst, "dst")
    dy, dx = check_offset(offset)
    if abs(dy) > 0.5 or abs(dx) > 0.5:
        raise ValueError(f"offset={offset!r}: each component must be in [-0.5, 0.5] (cells)")
    if is_zero_offset((dy, dx)):  # the plain rule
        out = scale_float_boxes(boxes, (h, w), (H, W))
    else:
        boxes = boxes.float()
        if to_image:
            ys, xs = _cells_to_pixels(boxes[..., 0::2], h, H, dy), _cells_to_pixels(boxes[..., 1::2], w, W, dx)
        else:
            ys, xs = _pixels_to_cells(boxes[..., 0::2], H, h, dy), _pixels_to_cells(boxes[..., 1::2], W, w, dx)
        out = torch.stack([ys[..., 0], xs[..., 0], ys[..., 1], xs[..., 1]], dim=-1)
    if clip:
        out = torch.minimum(out.clamp_min(0), torch.tensor([H, W, H, W], device=out.device, dtype=out.dtype))
    return out


def cells_to_image(boxes: Tensor, cell_grid: tuple[int, int], image_grid: tuple[int, int],
                   offset: Offset = (0.0, 0.0), clip: bool = True) -> Tensor:
    """Boxes on the cell grid -> the image region they cover.

    Per axis a piecewise linear map that puts every cell centre where ``offset`` says (``u = i + 0.5`` ->
    ``(i + 0.5 + delta) * H / h``) and the frame's edges on the frame's edges (``0 -> 0``, ``h -> H``): between
    the first and the last cell centre ``y = (u + delta) * H / h``, so a one-cell box of an interior cell is
    centred on its receptive field. Offset 0 gives ``y = u * H / h`` exactly (``scale_float_boxes``).

    Args:
        boxes: ``Tensor[..., 4]`` ``(y0, x0, y1, x1)`` in cell coordinates (any real or integer dtype).
        cell_grid: ``(h, w)``; image_grid: ``(H, W)``; offset: ``(delta_y, delta_x)`` in cells, each in
            [-0.5, 0.5].
        clip: clip the result to the image frame ``[0, H] x [0, W]``.

    Returns:
        ``Tensor[..., 4]`` float32 in image pixels.
    """
    return _map_boxes(boxes, cell_grid, image_grid, offset, to_image=True, clip=clip)


def image_to_cells(boxes: Tensor, image_grid: tuple[int, int], cell_grid: tuple[int, int],
                   offset: Offset = (0.0, 0.0), clip: bool = True) -> Tensor:
    """Image boxes -> cell-grid boxes: the inverse of ``cells_to_image`` (the whole frame stays the whole frame).

    Args:
        boxes: ``Tensor[..., 4]`` ``(y0, x0, y1, x1)`` in image pixels (any real dtype).
        image_grid: ``(H, W)``; cell_grid: ``(h, w)``; offset: ``(delta_y, delta_x)`` in cells.
        clip: clip the result to the cell frame ``[0, h] x [0, w]``.

    Returns:
        ``Tensor[..., 4]`` float32 in cell coordinates.
    """
    return _map_boxes(boxes, image_grid, cell_grid, offset, to_image=False, clip=clip)
