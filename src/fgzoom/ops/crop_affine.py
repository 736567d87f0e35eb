"""Batched, differentiable crop-and-resize of continuous boxes: ``F.affine_grid`` + ``F.grid_sample``.

``crop_affine(x, boxes, size)`` samples each float box ``(y0, x0, y1, x1)`` (grid coordinates: 0 is the
top/left edge of the first cell, ``h``/``w`` the bottom/right edge of the last) on an ``size`` output grid
in one ``grid_sample`` call for the whole batch. Boxes may be fractional and narrower than one cell, and the
output is differentiable with respect to ``x`` and (for bilinear/bicubic) to ``boxes``, which is what
learned boxes train through.

Where the samples sit (per axis, box start ``b``, length ``L``, ``O`` output samples, positions in cell
units where cell ``i`` is centred at ``i + 0.5``):

* ``align_corners=False`` (default): at ``b + (j + 0.5) * L / O``, the centres of ``O`` equal parts of the
  box. Works for any ``L > 0``.
* ``align_corners=True``: the first and last samples at the centres of the box's first and last cells,
  ``b + 0.5 + j * (L - 1) / (O - 1)``; boxes narrower than one cell are widened to one cell about their
  centre.

Agreement with the exact ``slice`` sampler (``crop_resize``, i.e. ``F.interpolate`` of ``x[..., y0:y1,
x0:x1]``) on integer boxes: for ``mode="bilinear", align_corners=True`` every sample lies inside the box
and the two agree to float rounding (tested to 1e-5). They are NOT defined to agree (and differ at the
box border) for ``align_corners=False`` (``F.interpolate`` clamps source positions to the crop, so its
border samples repeat the edge cell; ``grid_sample`` reads the cells next to the box), for ``bicubic``
(its 4x4 taps at the border read outside the box here, clamp inside the crop there) and for ``nearest``
(``grid_sample`` rounds to the nearest cell, ``F.interpolate`` floors). Outside the frame the border cells
repeat (``padding_mode="border"``). ``grid_sample`` does not antialias: when a box is larger than the
output (a downsampling crop) it aliases where ``crop_resize(..., antialias=True)`` would not.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

AFFINE_MODES = ("nearest", "bilinear", "bicubic")


def affine_theta(boxes: Tensor, frame: tuple[int, int], align_corners: bool,
                 size: tuple[int, int] = (2, 2)) -> Tensor:
    """``F.affine_grid`` matrices Tensor[N, 2, 3] that map each output grid onto its box.

    The output grid's normalized coordinates follow ``align_corners``; the input side is always read with
    ``grid_sample(..., align_corners=False)`` (cell i of n at normalized ``(2 i + 1) / n - 1``), which also
    covers frames one cell wide.

    Args:
        boxes: Tensor[N, 4] float ``(y0, x0, y1, x1)`` in the frame's grid coordinates.
        frame: (h, w) of the tensor that is sampled.
        align_corners: where the samples sit (module docstring).
        size: (oh, ow) output size; a side of 1 with align_corners=True samples the box's first cell, as
            ``F.interpolate`` does.
    """
    h, w = frame
    dtype = torch.float64 if boxes.dtype == torch.float64 else torch.float32
    y0, x0, y1, x1 = boxes.to(dtype).unbind(1)
    rows = _axis(y0, y1, h, align_corners, size[0])
    cols = _axis(x0, x1, w, align_corners, size[1])
    zero = torch.zeros_like(y0)
    # affine_grid: grid[..., 0] (x) = theta[0] @ (x_out, y_out, 1), grid[..., 1] (y) = theta[1] @ (...)
    return torch.stack(
        [torch.stack([cols[0], zero, cols[1]], dim=1), torch.stack([zero, rows[0], rows[1]], dim=1)], dim=1
    )


def _axis(start: Tensor, end: Tensor, n: int, align_corners: bool, out: int) -> tuple[Tensor, Tensor]:
    """Slope and offset (Tensor[N] each) from output normalized coordinates to input normalized coordinates
    along one axis of ``n`` cells.

    In cell-index space u (cell i at u = i), the samples are ``u = u0 + s * (t + 1)`` for output normalized
    t in [-1, 1]; the input reads ``u`` at normalized ``(2 u + 1) / n - 1``. ``affine_grid`` puts a one-sample
    output at t = 0 with align_corners=True, so there the slope is 0 and the sample sits at u0.
    """
    length = end - start
    if align_corners:
        centre = (start + end) / 2
        length = length.clamp_min(1.0)
        u0, s = centre - length / 2, (length - 1) / 2
        if out == 1:
            s = torch.zeros_like(s)
    else:
        u0, s = start - 0.5, length / 2
    slope = 2 * s / n
    return slope, (2 * u0 + 1) / n - 1 + slope


def crop_affine(
    x: Tensor,
    boxes: Tensor,
    size: tuple[int, int],
    mode: str = "bilinear",
    align_corners: bool | None = None,
) -> Tensor:
    """Sample float ``boxes`` out of ``x`` onto ``size`` grids, batched.

    Args:
        x: Tensor[N, C, h, w] (fp32/bf16/fp16, CPU or CUDA).
        boxes: Tensor[N, 4] float ``(y0, x0, y1, x1)`` in x's grid coordinates (see the module docstring).
        size: (oh, ow) output size.
        mode: ``nearest`` | ``bilinear`` | ``bicubic`` (``grid_sample`` modes).
        align_corners: None = False.

    Returns:
        Tensor[N, C, oh, ow] in x's dtype (bf16/fp16 are sampled in fp32); differentiable in x and, for
        bilinear/bicubic, in boxes.
    """
    if mode not in AFFINE_MODES:
        raise ValueError(f"crop_affine: mode={mode!r}: must be one of {AFFINE_MODES}")
    if x.ndim != 4 or boxes.shape != (x.shape[0], 4):
        raise ValueError(f"crop_affine: x {tuple(x.shape)} and boxes {tuple(boxes.shape)}: need [N, C, h, w], [N, 4]")
    oh, ow = int(size[0]), int(size[1])
    theta = affine_theta(boxes, tuple(x.shape[-2:]), bool(align_corners), (oh, ow))
    with warnings.catch_warnings():  # affine_grid warns about its one-sample convention, handled in _axis
        warnings.filterwarnings("ignore", message=".*unit-size grids.*")
        grid = F.affine_grid(theta, [x.shape[0], 1, oh, ow], align_corners=bool(align_corners))  # [N, oh, ow, 2]
    # fp32 sampling for half types: a bf16 grid moves samples by up to half a cell on large frames, and the CPU
    # kernel returns NaN in bf16/fp16 on frames wider than 256 cells (PyTorch 2.14)
    source = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = F.grid_sample(source, grid.to(source.dtype), mode=mode, padding_mode="border", align_corners=False)
    out = out.to(x.dtype)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)  # keep the network's memory format
    return out
