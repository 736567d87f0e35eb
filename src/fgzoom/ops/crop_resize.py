"""Batched crop-and-resize: one box per sample, resized exactly like ``F.interpolate``.

``crop_resize(x, boxes, size=...)`` with integer boxes returns what this loop returns, without the loop::

    torch.cat([F.interpolate(x[i : i + 1, :, y0:y1, x0:x1], size=size, mode=mode, ...)
               for i, (y0, x0, y1, x1) in enumerate(boxes.tolist())])

Float boxes may be fractional (grid coordinates: cell ``i`` spans ``[i, i + 1)``): they get the continuous
extension of the same resize, defined in ``fgzoom.ops.resize_continuous`` (F.interpolate's source-position
rule with the box's real start and length, each mode's kernel at the real positions, the crop border
clamped at the real edge). Integer-valued float boxes give the integer result (<= 1e-6 fp32 on values in
[0, 1]); the output is continuous in the boxes for every mode but the nearest ones and differentiable in
them (``torch.autograd.gradcheck`` passes in float64).

Accepted ``mode`` strings and the knobs each takes: ``MODES`` and ``check_interpolation`` in
``fgzoom.ops.interpolation`` (every 2-D mode of ``F.interpolate``; lanczos needs ``antialias=True`` and takes
``align_corners`` None or False). PyTorch runs lanczos on the CPU only; here its weights are computed on the
CPU and applied on any device.

This module holds the public function and its argument checks. How a batch is resized (per-axis weight
tables read off ``F.interpolate`` for integer boxes, weights built from float boxes by
``fgzoom.ops.resize_continuous``, and four methods that apply them: ``"gather"``, ``"dense"``, ``"taps"``,
``"loop"``) is ``fgzoom.ops.resize_kernels``; which method runs (``method="auto"``) is
``fgzoom.ops.resize_cost`` (for float boxes from the mode and device only, so a dynamic batch exports).

Notes:
    * Box values are validated with one host read per call (a handful of reduced numbers, not per sample),
      which also yields the box size when ``scale_factor`` is given. ``check_boxes=False`` skips it for boxes
      valid by construction; a CUDA call with ``size`` then reads nothing back to the host (no sync).
    * The ``"dense"`` method multiplies pixels outside the box by zero, so a non-finite value anywhere in a
      sample's frame turns that sample's output into NaN; the loop only sees the box.
    * PyTorch's CPU antialias kernels (bilinear/bicubic/lanczos) return a wrong result when the output width
      is 1 (every output row repeats the first one; PyTorch 2.14) and have no fp16/bf16 version.
      ``crop_resize`` returns the correct separable result in both cases and does not use the loop for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from fgzoom.ops.interpolation import MODES, NEAREST_MODES, ResizeSpec, resize_spec
from fgzoom.ops.resize_cost import choose_float_method, choose_method
from fgzoom.ops.resize_kernels import KERNELS, resize_boxes, resize_float_boxes

__all__ = ["METHODS", "MODES", "crop_resize"]

METHODS = ("auto", *KERNELS)
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def crop_resize(
    x: Tensor,
    boxes: Tensor,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "bilinear",
    align_corners: bool | None = None,
    antialias: bool = False,
    recompute_scale_factor: bool | None = None,
    *,
    check_boxes: bool = True,
    method: str = "auto",
) -> Tensor:
    """Crop one box per sample and resize it exactly as ``F.interpolate`` would, batched.

    Args:
        x: ``Tensor[B, C, H, W]``, floating point (fp16/bf16/fp32/fp64), any device and memory layout.
        boxes: ``Tensor[B, 4]`` ``(y0, x0, y1, x1)`` in pixels of ``x`` with ``0 <= y0 < y1 <= H`` and
            ``0 <= x0 < x1 <= W``: integer (whole cells, end-exclusive) or floating (continuous edges, any
            positive size; gradients flow into them). Moved to ``x.device`` if needed.
        size: output size, ``int`` or ``(h, w)``. Exactly one of ``size`` and ``scale_factor``.
        scale_factor: ``float`` or ``(sh, sw)``; the output size ``floor(box side * scale)`` then depends on
            the box, so every box of the batch must have the same height and width.
        mode: one of ``MODES`` (``fgzoom.ops.interpolation``).
        align_corners: as in ``F.interpolate``; only for bilinear, bicubic (and lanczos: None or False).
        antialias: as in ``F.interpolate``; only for bilinear, bicubic, lanczos (which requires it).
        recompute_scale_factor: as in ``F.interpolate``; only meaningful with ``scale_factor``.
        check_boxes: check the box values (bounds, non-empty), which reads a few reduced numbers back to
            the host once per call: a device synchronisation on CUDA. ``False`` skips the check for boxes
            that are valid by construction (``threshold_boxes``, ``glimpse_boxes``), so that a call with
            ``size`` reads nothing back (on the CPU the per-sample loop, if the cost model picks it for
            large images, still reads the boxes; no device is involved there); invalid boxes then give
            wrong values or an indexing error instead of a ``ValueError``. With ``scale_factor`` the boxes
            are always read once (the output size depends on them) and checked.
        method: one of ``METHODS``: ``"auto"`` (``choose_method``, the default) or a method forced, for
            tests and benchmarks (``"gather"`` needs a nearest mode; ``"loop"`` integer boxes). Every method
            gives the same values.

    Returns:
        ``Tensor[B, C, Oh, Ow]`` with ``x``'s dtype and device: sample ``i`` is ``F.interpolate`` of
        ``x[i, :, y0:y1, x0:x1]`` (or its continuous extension for fractional boxes). Channels-last input
        gives channels-last output. Differentiable w.r.t. ``x`` (and float ``boxes``). An empty batch gives ``Tensor[0, C, Oh, Ow]`` (``Tensor[0, C, 0, 0]`` with ``scale_factor``,
        since there is no box to size the output from).

    Raises:
        ValueError: on an unknown mode, an option the mode does not take, both or neither of
            ``size``/``scale_factor``, a bad size or scale, boxes of the wrong shape, dtype, batch size or
            out of bounds or empty, boxes of different sizes with ``scale_factor``, or an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: must be one of {METHODS}")
    _check_x(x)
    spec = resize_spec(mode, align_corners, antialias, size, scale_factor, recompute_scale_factor)
    if method == "gather" and spec.mode not in NEAREST_MODES:
        raise ValueError(f"method='gather': needs a nearest mode {NEAREST_MODES}, got mode={spec.mode!r}")
    _check_boxes_meta(boxes, x)
    continuous = boxes.dtype.is_floating_point
    if continuous and method == "loop":
        raise ValueError("method='loop' runs F.interpolate on integer slices; float boxes need another method")
    B, C, H, W = x.shape
    if B == 0:
        out_hw = spec.size if spec.size is not None else (0, 0)
        return _empty_like_output(x, out_hw)

    if continuous:
        boxes = boxes.to(device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    else:
        boxes = boxes.to(device=x.device, dtype=torch.int64)
    if check_boxes or spec.scale_factor is not None:
        box_stats = _check_box_values(boxes, H, W, need_common_size=spec.scale_factor is not None)
    else:  # nothing read back; the cost model takes the frame as the box size (it matters only when shrinking)
        box_stats = _BoxStats(None, (float(H), float(W)))
    out_hw = _output_size(spec, box_stats.common_hw)
    if continuous:
        return resize_float_boxes(x, boxes, spec, out_hw, choose_float_method(x, spec) if method == "auto" else method)
    if method == "auto":
        method = choose_method(x, spec, out_hw, box_stats.mean_hw)
    return resize_boxes(x, boxes, spec, out_hw, method, box_stats.common_hw)


# ----------------------------------------------------------------------------------------------------------
# Validation


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a Tensor[B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D Tensor[B, C, H, W], got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}")


def _check_boxes_meta(boxes: Tensor, x: Tensor) -> None:
    if not isinstance(boxes, Tensor):
        raise ValueError(f"boxes must be a Tensor[B, 4], got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [B, 4] as (y0, x0, y1, x1), got shape {tuple(boxes.shape)}")
    if boxes.dtype not in _INT_DTYPES and not boxes.dtype.is_floating_point:
        raise ValueError(
            f"boxes must have an integer dtype (whole cells, e.g. torch.int64) or a floating one (continuous "
            f"boxes), got {boxes.dtype}"
        )
    if boxes.shape[0] != x.shape[0]:
        raise ValueError(
            f"boxes must hold one box per sample of x: got {boxes.shape[0]} boxes for a batch of {x.shape[0]}"
        )


class _BoxStats(NamedTuple):
    """Host-side summary of the boxes, from the one read of ``_check_box_values``."""

    common_hw: tuple[float, float] | None  # the (h, w) shared by every box, if asked for and valid
    mean_hw: tuple[float, float]  # mean box height and width (for the cost model)


def _check_box_values(boxes: Tensor, H: int, W: int, *, need_common_size: bool) -> _BoxStats:
    """Check bounds with one host read (a few reduced numbers, not per-sample values)."""
    y0, x0, y1, x1 = boxes.unbind(1)
    hs, ws = y1 - y0, x1 - x0  # [B]
    stats = torch.stack(
        [y0.min(), x0.min(), y1.max(), x1.max(), hs.min(), ws.min(), hs.max(), ws.max(), hs.sum(), ws.sum()]
    )
    values = stats.tolist()  # the one sync
    y0_min, x0_min, y1_max, x1_max, h_min, w_min, h_max, w_max, h_sum, w_sum = values
    if not all(map(math.isfinite, values)) or (
        y0_min < 0 or x0_min < 0 or y1_max > H or x1_max > W or h_min <= 0 or w_min <= 0
    ):
        bad = (y0 < 0) | (x0 < 0) | (y1 > H) | (x1 > W) | (hs <= 0) | (ws <= 0)
        bad |= ~torch.isfinite(boxes).all(1)
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"boxes[{i}] = {tuple(boxes[i].tolist())} is not a valid (y0, x0, y1, x1) box for a {H}x{W} frame: "
            f"need 0 <= y0 < y1 <= {H} and 0 <= x0 < x1 <= {W} (end-exclusive, non-empty)"
        )
    mean_hw = (h_sum / len(boxes), w_sum / len(boxes))
    if not need_common_size:
        return _BoxStats(None, mean_hw)
    if h_min != h_max or w_min != w_max:
        raise ValueError(
            "scale_factor needs every box of the batch to have the same height and width (the output size is "
            f"box size * scale_factor), got heights {h_min}..{h_max} and widths {w_min}..{w_max}; "
            "pass size=(h, w) instead, or use equal-size (glimpse) boxes"
        )
    if boxes.dtype.is_floating_point:
        return _BoxStats((float(h_min), float(w_min)), mean_hw)
    return _BoxStats((int(h_min), int(w_min)), mean_hw)


def _output_size(spec: ResizeSpec, box_hw: tuple[float, float] | None) -> tuple[int, int]:
    if spec.size is not None:
        return spec.size
    assert box_hw is not None and spec.scale_factor is not None  # internal invariant, not user input
    # Same rule as F.interpolate: floor(input_size * scale).
    out = tuple(int(math.floor(float(n) * s)) for n, s in zip(box_hw, spec.scale_factor, strict=True))
    if min(out) < 1:
        raise ValueError(
            f"scale_factor={spec.scale_factor!r} gives an empty output {out} for boxes of size {box_hw}; "
            "use a larger scale_factor"
        )
    return out[0], out[1]


def _empty_like_output(x: Tensor, out_hw: tuple[int, int]) -> Tensor:
    C = x.shape[1]
    if x.shape[2] > 0 and x.shape[3] > 0:
        # Keep the result attached to x's graph, so that a loss on it can still be backpropagated.
        return x[:0, :, :1, :1].expand(0, C, out_hw[0], out_hw[1]).clone()
    return x.new_zeros((0, C, out_hw[0], out_hw[1]))
