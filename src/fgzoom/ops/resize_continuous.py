"""The per-axis weights of ``crop_resize`` on float boxes: ``F.interpolate``'s rule with a real start and length.

A box ``(y0, x0, y1, x1)`` is in grid coordinates: cell ``i`` spans ``[i, i + 1)``, so an integer box is the
slice ``x[..., y0:y1, x0:x1]``. Per axis, with real start ``b``, real length ``L = end - b``, ``O`` outputs and
``j = 0 .. O-1``, positions below are in cell-index units of the frame (cell ``i`` at ``i``):

* **The scale** ``s`` is ``F.interpolate``'s: ``L / O``, or ``1 / scale_factor`` when a scale factor is given
  (and not recomputed); ``(L - 1) / (O - 1)`` with ``align_corners=True`` (0 for ``O = 1``).
* **The source position** is ``F.interpolate``'s source index in the crop, shifted by ``b``: ``p_j = b + src_j``
  with ``src_j = s (j + 0.5) - 0.5`` (``s j`` with ``align_corners=True``).
* **The crop border** is handled as ``F.interpolate`` handles it, at the real edge: source positions (linear)
  and kernel taps (cubic) are clamped to ``[b, b + L - 1]``, the centres of the box's first and last
  (possibly partial) cells; a box shorter than one cell clamps to its centre, ``b + (L - 1) / 2``; no
  position leaves the frame's cells ``[0, n - 1]``.
* **Reading the frame** at a real position ``q`` is linear between cells ``floor(q)`` and ``floor(q) + 1``
  (a tap at an integer position reads that cell exactly).

Per mode:

* ``nearest``: cell ``floor(b + s j)``; ``nearest-exact``: cell ``floor(b + s (j + 0.5))``; both at most the
  last cell the box touches (``F.interpolate``'s ``min(., L - 1)``). Piecewise constant in the box.
* ``bilinear``: the frame read at ``clamp(p_j, b, b + L - 1)`` (``F.interpolate`` clamps ``src < 0`` to 0
  and repeats the last cell above ``L - 1``).
* ``bicubic``: Keys' cubic convolution (``A = -0.75``) over taps ``floor(p_j) - 1 .. floor(p_j) + 2`` with
  ``t = p_j - floor(p_j)``; a tap outside the box reads the frame at the clamped position.
* ``area``: a box filter over partial cells: output ``j`` averages the frame over ``[S_j, E_j]``, each cell
  weighted by its overlap. For an integer length ``L``, ``S_j = b + floor(j L / O)`` and
  ``E_j = b + ceil((j + 1) L / O)``, the windows of adaptive average pooling (``F.interpolate``'s area); for
  a fractional ``L`` the window edges are interpolated linearly between those of ``floor(L)`` and
  ``floor(L) + 1``, so they move continuously with the box.
* ``antialias=True`` (bilinear, bicubic with ``A = -0.5``, lanczos-3): ``F.interpolate``'s filter, widened by
  ``s`` when shrinking (``s > 1``), centred at ``b + s (j + 0.5)`` (grid units) and evaluated at the cell
  centres ``i + 0.5``; each cell's weight is multiplied by the fraction of the cell inside the box (1 inside,
  0 outside, partial at a fractional edge) and the weights are normalized to sum to 1, as ``F.interpolate``
  normalizes the weights it truncates at the crop border.

For integer-valued boxes each rule is exactly ``F.interpolate`` of the slice (the crop-space arithmetic is
done in the dtype ``F.interpolate`` uses, float32 below float64). For fractional boxes every mode but the
nearest ones is continuous in the box coordinates and differentiable in them almost everywhere (kinks where
a position crosses a cell edge or a length crosses an integer).

The weights are built on the device from the boxes, as sparse taps ``(index, weight)`` ``[B, O, K]`` over a
window of ``K`` cells (``K`` bounded by the frame, so there is no host read) or densely over all cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from fgzoom.ops.interpolation import ResizeSpec

__all__ = ["axis_taps"]

_AA_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}  # half the filter width at scale 1


def axis_taps(
    start: Tensor, length: Tensor, n: int, out: int, spec: ResizeSpec, scale_factor: float | None,
    crop_dtype: torch.dtype, dense: bool,
) -> tuple[Tensor, Tensor]:
    """The resize weights of one axis for every sample: ``out[b, o] = sum_k weight[b, o, k] * x[index[b, o, k]]``.

    Args:
        start, length: ``Tensor[B]`` floating, each box's real start and length (``length > 0``) in cells of
            the frame, with ``0 <= start`` and ``start + length <= n``. Gradients flow through them.
        n: frame length along this axis.
        out: output length ``O``.
        spec: the validated resize arguments (``mode``, ``align_corners``, ``antialias``).
        scale_factor: the axis' scale factor when given and not recomputed, else None (scale ``L / O``).
        crop_dtype: dtype of ``F.interpolate``'s own index arithmetic (float32, or float64 for float64 input).
        dense: weights over every cell (``K = n``, ``index`` = ``0 .. n-1``) instead of a window of taps.

    Returns:
        ``(index, weight)``: ``Tensor[B, O, K]`` int64 cells in ``[0, n)`` and float64 weights (zero for
        window cells outside the frame). Nearest modes give ``K = 1`` and weight 1 unless ``dense``.
    """
    B = start.shape[0]
    start, length = start.double(), length.double()
    j = torch.arange(out, device=start.device, dtype=crop_dtype)
    if spec.mode in ("nearest", "nearest-exact"):
        first, K, weigh = _nearest(start, length, j, n, out, spec.mode, scale_factor)
    elif spec.antialias:
        first, K, weigh = _antialias(start, length, j, n, out, spec, scale_factor, crop_dtype)
    elif spec.mode == "area":
        first, K, weigh = _area(start, length, n, out)
    else:
        first, K, weigh = _interpolated(start, length, j, n, out, spec, scale_factor, crop_dtype)
    if dense or K >= n:
        cells = torch.arange(n, device=start.device).expand(B, out, n)
    else:
        cells = first.unsqueeze(-1) + torch.arange(K, device=start.device)  # [B, O, K]
    weight = weigh(cells.double())
    inside = (cells >= 0) & (cells < n)
    weight = torch.where(inside, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))
    return cells.clamp(0, n - 1), weight


# ----------------------------------------------------------------------------------------------------------
# Geometry shared by the modes


def _scale(length: Tensor, out: int, scale_factor: float | None, align_corners: bool, dtype: torch.dtype) -> Tensor:
    """``F.interpolate``'s scale per sample, ``Tensor[B, 1]`` of ``dtype``: crop cells per output step."""
    if align_corners:
        if out == 1:
            return torch.zeros_like(length, dtype=dtype).unsqueeze(1)
        return ((length.to(dtype) - 1) / (out - 1)).unsqueeze(1)
    if scale_factor is not None:
        return torch.full_like(length, 1.0 / scale_factor, dtype=dtype).unsqueeze(1)
    return (length.to(dtype) / out).unsqueeze(1)


def _fused_source(s: Tensor, j: Tensor, crop_dtype: torch.dtype) -> Tensor:
    """``s (j + 0.5) - 0.5`` rounded once to ``crop_dtype`` (PyTorch's vectorized kernels use a fused
    multiply-add; the float32 product and sum are exact in float64)."""
    return (s.double() * (j.double() + 0.5) - 0.5).to(crop_dtype)


def _clamp_range(start: Tensor, length: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``Tensor[B, 1]`` each: the cell-index range ``[b, b + L - 1]`` a position is clamped to (the box's
    centre ``b + (L - 1) / 2`` for a box shorter than one cell), kept within the frame's cells ``[0, n - 1]``
    (a short box at the frame's edge has its centre less than half a cell from the border)."""
    half = (length - 1) / 2
    lo = (start + torch.minimum(half, torch.zeros_like(half))).clamp(0, n - 1)
    hi = (start + torch.maximum(length - 1, half)).clamp(0, n - 1)
    return lo.unsqueeze(1), hi.unsqueeze(1)


def _hat(cells: Tensor, positions: Tensor) -> Tensor:
    """Linear-read weights of ``cells`` ``[B, O, K]`` for positions ``[B, O]``: ``max(0, 1 - |i - q|)``."""
    return (1 - (cells - positions.unsqueeze(-1)).abs()).clamp_min(0)


Weigh = Callable[[Tensor], Tensor]


# ----------------------------------------------------------------------------------------------------------
# Modes: each returns (first window cell Tensor[B, O] int64, window size K, weights of cells Tensor[B, O, K])


def _nearest(start: Tensor, length: Tensor, j: Tensor, n: int, out: int, mode: str,
             scale_factor: float | None) -> tuple[Tensor, int, Weigh]:
    # F.interpolate's nearest kernels compute the scale and the source index in float32 for every dtype.
    s = _scale(length, out, scale_factor, False, torch.float32)
    jf = j.float() + (0.5 if mode == "nearest-exact" else 0.0)
    src = (jf * s).double()  # [B, O], the float32 product, exact in float64
    last = torch.ceil(start + length) - 1  # the last cell the box touches
    cell = torch.minimum(torch.floor(start.unsqueeze(1) + src), last.unsqueeze(1)).clamp(0, n - 1)
    first = cell.long()
    return first, 1, lambda cells: (cells == cell.unsqueeze(-1)).double()


def _interpolated(start: Tensor, length: Tensor, j: Tensor, n: int, out: int, spec: ResizeSpec,
                  scale_factor: float | None, crop_dtype: torch.dtype) -> tuple[Tensor, int, Weigh]:
    """bilinear and bicubic without antialias."""
    align = bool(spec.align_corners)
    s = _scale(length, out, scale_factor, align, crop_dtype)
    src = s * j if align else _fused_source(s, j, crop_dtype)  # [B, O], as F.interpolate computes it
    pos = start.unsqueeze(1) + src.double()
    lo, hi = _clamp_range(start, length, n)
    if spec.mode == "bilinear":
        q = torch.minimum(torch.maximum(pos, lo), hi)
        return torch.floor(q).long(), 2, lambda cells: _hat(cells, q)
    # bicubic: 4 taps around floor(pos), each read at its position clamped into the box
    i0 = torch.floor(pos)
    coeffs = _cubic_coefficients(pos - i0, -0.75, crop_dtype)  # [B, O, 4]
    taps = i0.unsqueeze(-1) + torch.arange(-1, 3, device=pos.device, dtype=pos.dtype)  # [B, O, 4]
    taps = torch.minimum(torch.maximum(taps, lo.unsqueeze(-1)), hi.unsqueeze(-1))

    def weigh(cells: Tensor) -> Tensor:
        return sum(coeffs[..., k, None] * _hat(cells, taps[..., k]) for k in range(4))

    return i0.long() - 1, 5, weigh


def _cubic_coefficients(t: Tensor, a: float, dtype: torch.dtype) -> Tensor:
    """Keys' cubic convolution weights of the taps at offsets -1, 0, 1, 2 for fraction ``t``: ``[..., 4]``.

    Evaluated in ``t``'s dtype (float64) with each step rounded to ``dtype`` the way PyTorch's kernels round
    it (distances ``t + 1``, ``t``, ``1 - t``, ``(1 - t) + 1``; Horner steps as fused multiply-adds), so that
    integer boxes get ``F.interpolate``'s float32 weights to about 2 ulp.
    """
    def r(v: Tensor) -> Tensor:
        return v.to(dtype).to(t.dtype)

    def near(x: Tensor) -> Tensor:  # |x| <= 1
        return r(r(r((a + 2) * x - (a + 3)) * x) * x + 1)

    def far(x: Tensor) -> Tensor:  # 1 < |x| < 2
        return r(r(r(a * x - 5 * a) * x + 8 * a) * x - 4 * a)

    t = r(t)
    u = r(1 - t)
    return torch.stack([far(r(t + 1)), near(t), near(u), far(r(u + 1))], dim=-1)


def _area(start: Tensor, length: Tensor, n: int, out: int) -> tuple[Tensor, int, Weigh]:
    whole = torch.floor(length).clamp_max(n)  # [B]
    frac = (length - whole).unsqueeze(1)  # [B, 1]
    j = torch.arange(out, device=start.device, dtype=torch.float64)

    def edges(L: Tensor) -> tuple[Tensor, Tensor]:  # adaptive pooling's windows for integer lengths L [B]
        lower = torch.div(j * L.unsqueeze(1), out, rounding_mode="floor")
        upper = -torch.div(-(j + 1) * L.unsqueeze(1), out, rounding_mode="floor")
        return lower, upper

    lo0, hi0 = edges(whole)
    lo1, hi1 = edges(whole + 1)
    b = start.unsqueeze(1)
    S = b + lo0 + frac * (lo1 - lo0)
    E = b + hi0 + frac * (hi1 - hi0)
    E = torch.maximum(E, S + 1e-9)  # a box of (almost) zero length reads the cell at its start
    width = E - S

    def weigh(cells: Tensor) -> Tensor:
        overlap = torch.minimum(E.unsqueeze(-1), cells + 1) - torch.maximum(S.unsqueeze(-1), cells)
        return overlap.clamp_min(0) / width.unsqueeze(-1)

    return torch.floor(S).long(), math.ceil(n / out) + 4, weigh


def _antialias(start: Tensor, length: Tensor, j: Tensor, n: int, out: int, spec: ResizeSpec,
               scale_factor: float | None, crop_dtype: torch.dtype) -> tuple[Tensor, int, Weigh]:
    """bilinear, bicubic and lanczos with ``antialias=True`` (PyTorch's separable antialias kernels)."""
    # [B, 1]; with align_corners=True a box shorter than one cell would give a negative scale: 0 instead
    s = _scale(length, out, scale_factor, bool(spec.align_corners), crop_dtype).double().clamp_min(0)
    half = _AA_SUPPORT[spec.mode]
    widen = s.clamp_min(1.0)  # the filter is widened by the scale when shrinking
    centre = start.unsqueeze(1) + (s.to(crop_dtype) * (j + 0.5)).double()  # [B, O], grid units
    support = half * widen  # [B, 1] in cells
    # Window bound from the frame (no host read): the scale is at most n / O (or (n - 1) / (O - 1)).
    s_max = max(1.0, n / out, (n - 1) / (out - 1) if out > 1 else 0.0, 1.0 / (scale_factor or math.inf))
    K = 2 * math.ceil(half * s_max) + 3
    b, end = start.unsqueeze(1).unsqueeze(-1), (start + length).unsqueeze(1).unsqueeze(-1)
    filt = _AA_FILTERS[spec.mode]

    def weigh(cells: Tensor) -> Tensor:
        coverage = (torch.minimum(end, cells + 1) - torch.maximum(b, cells)).clamp(0, 1)
        w = coverage * filt((cells + 0.5 - centre.unsqueeze(-1)) / widen.unsqueeze(-1))
        total = w.sum(-1, keepdim=True)
        return w / torch.where(total.abs() < 1e-12, torch.ones_like(total), total)

    return torch.floor(centre - support).long() - 1, K, weigh


def _triangle(x: Tensor) -> Tensor:
    return (1 - x.abs()).clamp_min(0)


def _cubic_aa(x: Tensor) -> Tensor:
    a, x = -0.5, x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _lanczos3(x: Tensor) -> Tensor:
    inside = (x >= -3) & (x < 3)
    return torch.where(inside, torch.sinc(x) * torch.sinc(x / 3), torch.zeros_like(x))


_AA_FILTERS: dict[str, Callable[[Tensor], Tensor]] = {
    "bilinear": _triangle, "bicubic": _cubic_aa, "lanczos": _lanczos3,
}
