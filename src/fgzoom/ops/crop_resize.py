"""Batched crop-and-resize: one box per sample, resized exactly like ``F.interpolate``.

``crop_resize(x, boxes, size=...)`` returns what this loop returns, without the loop::

    torch.cat([F.interpolate(x[i : i + 1, :, y0:y1, x0:x1], size=size, mode=mode, ...)
               for i, (y0, x0, y1, x1) in enumerate(boxes.tolist())])

Accepted ``mode`` strings (every 2-D mode of ``F.interpolate``):

* ``"nearest"``, ``"nearest-exact"``: no ``align_corners``, no ``antialias``.
* ``"bilinear"``, ``"bicubic"``: take ``align_corners`` (None means False) and ``antialias``.
* ``"area"``: adaptive average pooling; no ``align_corners``, no ``antialias``.
* ``"lanczos"``: needs ``antialias=True``; ``align_corners`` may only be None or False. PyTorch runs it on
  the CPU only; here its weights are computed on the CPU and applied on any device.

How it works. Every 2-D mode of ``F.interpolate`` is separable: the output is ``Wy @ crop @ Wx^T`` with one
weight matrix per axis (nearest, bilinear, bicubic with its border clamping, the antialiasing filters and
adaptive average pooling all factor this way). The weights for a crop of length ``L`` resized to ``O`` are
read off ``F.interpolate`` itself, applied to an identity matrix, so PyTorch's own index and scale arithmetic
is reused exactly; they are cached as sparse taps (index, weight) for every ``L`` of the frame, once per
``(frame size, O or scale, mode, knobs, dtype, device)``. Each sample picks its row of the table by its box
length and shifts it by its box start on the device, so there is no per-sample host sync. Four methods
apply the weights:

* ``"gather"`` (nearest modes): one index gather of the selected pixels.
* ``"dense"``: taps expanded into full-frame matrices ``Wy[B, Oh, H]``, ``Wx[B, Ow, W]`` (zero outside
  the box), then two batched matmuls, in channel blocks that keep the intermediates in cache. Cheapest for
  small frames with many channels (feature maps).
* ``"taps"``: the same sums over the few non-zero taps with gathers instead of matmuls.
* ``"loop"``: the reference loop itself.

Choice (``crop_resize``): on CUDA, ``"gather"`` for nearest modes, else ``"dense"``, or ``"taps"`` when TF32
matmuls are enabled (they would round ``x`` to 10 mantissa bits); never the loop. On CPU, a cost model on
the shapes (fitted on this project's 2-core machine, no timing at run time) picks the cheapest of
``"gather"``/``"dense"``/``"loop"``: the batched methods for feature maps, the native per-sample kernels for
large images with few channels. When autograd records, the loop's backward (one full-size zero gradient of
``x`` per sample) is counted too, which rules it out for feature maps in training.

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

import functools
import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MODES", "METHODS", "crop_resize"]

MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area", "lanczos")
METHODS = ("auto", "gather", "dense", "taps", "loop")
_ALIGN_CORNERS_MODES = ("bilinear", "bicubic", "lanczos")
_ANTIALIAS_MODES = ("bilinear", "bicubic", "lanczos")
_NEAREST_MODES = ("nearest", "nearest-exact")
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_DENSE_BLOCK_ELEMS = 1 << 20  # intermediate elements per channel block of the dense method


class _Spec(NamedTuple):
    """Validated, hashable resize arguments (per-axis tuples are (height, width))."""

    mode: str
    align_corners: bool | None
    antialias: bool
    size: tuple[int, int] | None
    scale_factor: tuple[float, float] | None
    recompute_scale_factor: bool | None


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
) -> Tensor:
    """Crop one box per sample and resize it exactly as ``F.interpolate`` would, batched.

    Args:
        x: ``Tensor[B, C, H, W]``, floating point (fp16/bf16/fp32/fp64), any device and memory layout.
        boxes: ``Tensor[B, 4]``, integer dtype, ``(y0, x0, y1, x1)`` in pixels of ``x``, end-exclusive,
            with ``0 <= y0 < y1 <= H`` and ``0 <= x0 < x1 <= W``. Moved to ``x.device`` if needed.
        size: output size, ``int`` or ``(h, w)``. Exactly one of ``size`` and ``scale_factor``.
        scale_factor: ``float`` or ``(sh, sw)``; the output size ``floor(box side * scale)`` then depends on
            the box, so every box of the batch must have the same height and width.
        mode: one of ``MODES``, see the module docstring.
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

    Returns:
        ``Tensor[B, C, Oh, Ow]`` with ``x``'s dtype and device: sample ``i`` is ``F.interpolate`` of
        ``x[i, :, y0:y1, x0:x1]``. Channels-last input gives channels-last output. Differentiable w.r.t.
        ``x``. An empty batch gives ``Tensor[0, C, Oh, Ow]`` (``Tensor[0, C, 0, 0]`` with ``scale_factor``,
        since there is no box to size the output from).

    Raises:
        ValueError: on an unknown mode, an option the mode does not take, both or neither of
            ``size``/``scale_factor``, a bad size or scale, boxes of the wrong shape, dtype, batch size or
            out of bounds or empty, or boxes of different sizes with ``scale_factor``.
    """
    return _crop_resize_impl(
        x, boxes, size, scale_factor, mode, align_corners, antialias, recompute_scale_factor, method="auto",
        check_boxes=check_boxes,
    )


def _crop_resize_impl(
    x: Tensor,
    boxes: Tensor,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "bilinear",
    align_corners: bool | None = None,
    antialias: bool = False,
    recompute_scale_factor: bool | None = None,
    *,
    method: str = "auto",
    check_boxes: bool = True,
) -> Tensor:
    """``crop_resize`` with the method forced (``"auto"``, ``"gather"``, ``"dense"``, ``"taps"``, ``"loop"``).

    For tests and benchmarks; see ``crop_resize`` for the arguments.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_x(x)
    spec = _check_spec(mode, align_corners, antialias, size, scale_factor, recompute_scale_factor)
    if method == "gather" and spec.mode not in _NEAREST_MODES:
        raise ValueError(f"method='gather' needs a nearest mode {_NEAREST_MODES}, got mode={spec.mode!r}")
    _check_boxes_meta(boxes, x)
    B, C, H, W = x.shape
    if B == 0:
        out_hw = spec.size if spec.size is not None else (0, 0)
        return _empty_like_output(x, out_hw)

    boxes = boxes.to(device=x.device, dtype=torch.int64)
    if check_boxes or spec.scale_factor is not None:
        box_stats = _check_box_values(boxes, H, W, need_common_size=spec.scale_factor is not None)
    else:  # nothing read back; the cost model takes the frame as the box size (it matters only when shrinking)
        box_stats = _BoxStats(None, (float(H), float(W)))
    box_hw = box_stats.common_hw
    out_hw = _output_size(spec, box_hw)

    if method == "auto":
        method = _choose_method(x, spec, out_hw, box_stats.mean_hw)
    if method == "loop":
        return _loop(x, boxes, spec)

    y0, x0, y1, x1 = boxes.unbind(1)  # [B] each
    # Per axis: the table covers every crop length 1..H (size given) or the one common length (scale).
    lo_h, hi_h = (1, H) if box_hw is None else (box_hw[0], box_hw[0])
    lo_w, hi_w = (1, W) if box_hw is None else (box_hw[1], box_hw[1])
    table_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    knobs = (
        spec.mode,
        spec.align_corners,
        spec.antialias,
        spec.recompute_scale_factor,
        table_dtype,
        x.device,
    )
    idx_h, w_h = _axis_taps(lo_h, hi_h, out_hw[0], _axis_scale(spec, 0), *knobs)  # [nL, Oh, Kh]
    idx_w, w_w = _axis_taps(lo_w, hi_w, out_hw[1], _axis_scale(spec, 1), *knobs)  # [nL, Ow, Kw]
    # Row of the table per sample (its crop length), shifted to full-frame coordinates by its start.
    iy = idx_h.index_select(0, y1 - y0 - lo_h) + y0.view(B, 1, 1)  # [B, Oh, Kh]
    ix = idx_w.index_select(0, x1 - x0 - lo_w) + x0.view(B, 1, 1)  # [B, Ow, Kw]

    if method == "gather":
        out = _apply_gather(x, iy[..., 0], ix[..., 0])
    else:
        wy = w_h.index_select(0, y1 - y0 - lo_h)  # [B, Oh, Kh]
        wx = w_w.index_select(0, x1 - x0 - lo_w)  # [B, Ow, Kw]
        xc = x if x.dtype in (torch.float32, torch.float64) else x.float()
        if method == "dense":
            out = _apply_dense(xc, _scatter_dense(iy, wy, H), _scatter_dense(ix, wx, W))
        else:
            out = _apply_taps(xc, iy, wy, ix, wx)
        out = out.to(x.dtype)
    # Same memory format as F.interpolate gives (a no-op for the dense and gather methods).
    fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return out.contiguous(memory_format=fmt)


# ----------------------------------------------------------------------------------------------------------
# Validation


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a Tensor[B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D Tensor[B, C, H, W], got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}")


def _check_spec(
    mode: str,
    align_corners: bool | None,
    antialias: bool,
    size: int | Sequence[int] | None,
    scale_factor: float | Sequence[float] | None,
    recompute_scale_factor: bool | None,
) -> _Spec:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if align_corners not in (None, True, False):
        raise ValueError(f"align_corners must be None, True or False, got {align_corners!r}")
    if align_corners is not None and mode not in _ALIGN_CORNERS_MODES:
        raise ValueError(
            f"align_corners={align_corners!r} is only valid with modes {_ALIGN_CORNERS_MODES}, "
            f"got mode={mode!r}; leave align_corners=None"
        )
    if mode == "lanczos" and align_corners:
        raise ValueError("align_corners=True is not supported with mode='lanczos'; use None or False")
    if antialias not in (True, False):
        raise ValueError(f"antialias must be True or False, got {antialias!r}")
    if antialias and mode not in _ANTIALIAS_MODES:
        raise ValueError(
            f"antialias=True is only valid with modes {_ANTIALIAS_MODES}, got mode={mode!r}; "
            "use antialias=False"
        )
    if mode == "lanczos" and not antialias:
        raise ValueError("mode='lanczos' requires antialias=True, got antialias=False")
    if mode in _ALIGN_CORNERS_MODES and align_corners is None:
        align_corners = False  # F.interpolate's default for these modes
    if recompute_scale_factor not in (None, True, False):
        raise ValueError(
            f"recompute_scale_factor must be None, True or False, got {recompute_scale_factor!r}"
        )

    if (size is None) == (scale_factor is None):
        raise ValueError(
            f"exactly one of size and scale_factor must be given, got size={size!r}, scale_factor={scale_factor!r}"
        )
    out_size: tuple[int, int] | None = None
    scales: tuple[float, float] | None = None
    if size is not None:
        if recompute_scale_factor:
            raise ValueError(
                "recompute_scale_factor=True is only meaningful with scale_factor, got it with an explicit "
                f"size={size!r}; use None or False"
            )
        out_size = _pair(size, "size", integer=True)
    else:
        scales = _pair(scale_factor, "scale_factor", integer=False)
    return _Spec(mode, align_corners, bool(antialias), out_size, scales, recompute_scale_factor)


def _pair(value: object, name: str, *, integer: bool) -> tuple:
    """``value`` or ``(h, w)`` as a pair of positive ints (``integer``) or positive finite floats."""
    if integer:
        kind = "a positive int or a pair (h, w) of positive ints"
    else:
        kind = "a positive float or a pair (sh, sw) of positive floats"
    items = list(value) if isinstance(value, (tuple, list, torch.Size)) else [value, value]
    number = numbers.Integral if integer else numbers.Real
    ok = len(items) == 2 and all(
        isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in items
    )
    if not ok:
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return (int(items[0]), int(items[1])) if integer else (float(items[0]), float(items[1]))


def _check_boxes_meta(boxes: Tensor, x: Tensor) -> None:
    if not isinstance(boxes, Tensor):
        raise ValueError(f"boxes must be an integer Tensor[B, 4], got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [B, 4] as (y0, x0, y1, x1), got shape {tuple(boxes.shape)}")
    if boxes.dtype not in _INT_DTYPES:
        raise ValueError(
            f"boxes must have an integer dtype (pixel indices, e.g. torch.int64), got {boxes.dtype}; "
            "round float boxes explicitly before calling crop_resize"
        )
    if boxes.shape[0] != x.shape[0]:
        raise ValueError(
            f"boxes must hold one box per sample of x: got {boxes.shape[0]} boxes for a batch of {x.shape[0]}"
        )


class _BoxStats(NamedTuple):
    """Host-side summary of the boxes, from the one read of ``_check_box_values``."""

    common_hw: tuple[int, int] | None  # the (h, w) shared by every box, if asked for and valid
    mean_hw: tuple[float, float]  # mean box height and width (for the cost model)


def _check_box_values(boxes: Tensor, H: int, W: int, *, need_common_size: bool) -> _BoxStats:
    """Check bounds with one host read (a few reduced numbers, not per-sample values)."""
    y0, x0, y1, x1 = boxes.unbind(1)
    hs, ws = y1 - y0, x1 - x0  # [B]
    stats = torch.stack(
        [y0.min(), x0.min(), y1.max(), x1.max(), hs.min(), ws.min(), hs.max(), ws.max(), hs.sum(), ws.sum()]
    )
    y0_min, x0_min, y1_max, x1_max, h_min, w_min, h_max, w_max, h_sum, w_sum = stats.tolist()  # the one sync
    if y0_min < 0 or x0_min < 0 or y1_max > H or x1_max > W or h_min < 1 or w_min < 1:
        bad = (y0 < 0) | (x0 < 0) | (y1 > H) | (x1 > W) | (hs < 1) | (ws < 1)
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
    return _BoxStats((int(h_min), int(w_min)), mean_hw)


def _output_size(spec: _Spec, box_hw: tuple[int, int] | None) -> tuple[int, int]:
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


def _axis_scale(spec: _Spec, axis: int) -> float | None:
    return None if spec.scale_factor is None else spec.scale_factor[axis]


def _empty_like_output(x: Tensor, out_hw: tuple[int, int]) -> Tensor:
    C = x.shape[1]
    if x.shape[2] > 0 and x.shape[3] > 0:
        # Keep the result attached to x's graph, so that a loss on it can still be backpropagated.
        return x[:0, :, :1, :1].expand(0, C, out_hw[0], out_hw[1]).clone()
    return x.new_zeros((0, C, out_hw[0], out_hw[1]))


# ----------------------------------------------------------------------------------------------------------
# Weight tables


@functools.lru_cache(maxsize=256)
def _axis_taps(
    lo: int,
    hi: int,
    out_size: int,
    scale: float | None,
    mode: str,
    align_corners: bool | None,
    antialias: bool,
    recompute_scale_factor: bool | None,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Taps of the 1-D resize along one axis for every crop length ``L`` in ``lo..hi``.

    Returns:
        ``(index, weight)``: ``Tensor[hi - lo + 1, O, K]`` int64 indices into the crop and weights of
        ``dtype`` with ``out[o] = sum_k weight[L - lo, o, k] * crop[index[L - lo, o, k]]``; unused taps have
        weight 0 and index 0. ``O`` is ``out_size`` (or floor(L * scale) for a one-length table).
    """
    # Built outside inference mode so that cached tensors can be used later by autograd.
    with torch.inference_mode(False), torch.no_grad():
        knobs = (mode, align_corners, antialias, recompute_scale_factor)
        rows = [_one_axis_matrix(L, out_size, scale, *knobs, dtype, device) for L in range(lo, hi + 1)]
        k_max = max(1, max(int((m != 0).sum(1).max()) for m in rows))
        n_out = rows[0].shape[0]
        index = torch.zeros(len(rows), n_out, k_max, dtype=torch.int64, device=device)
        weight = torch.zeros(len(rows), n_out, k_max, dtype=dtype, device=device)
        for r, m in enumerate(rows):  # build time only, once per cache entry
            L = m.shape[1]
            col = torch.arange(L, device=device).expand_as(m)
            # Non-zero columns first, in increasing order; the rest have weight 0.
            order = torch.where(m != 0, col, col + L).argsort(dim=1)[:, :k_max]  # [O, min(L, K)]
            k = order.shape[1]
            index[r, :, :k] = order
            weight[r, :, :k] = m.gather(1, order)
    return index, weight


def _one_axis_matrix(
    L: int,
    out_size: int,
    scale: float | None,
    mode: str,
    align_corners: bool | None,
    antialias: bool,
    recompute_scale_factor: bool | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """``Tensor[O, L]``: the exact 1-D weights of ``F.interpolate`` from length ``L``, read off an identity.

    ``eye(L)`` is laid out as ``(1, L, L, w)``: channel ``c`` is the one-hot input ``e_c`` along the height
    axis, so output channel ``c`` is column ``c`` of the weight matrix. The width axis is resized ``w -> w``
    (the identity for every mode). ``w = 2`` when antialiasing: PyTorch's CPU antialias kernel is wrong for
    an output width of 1.
    """
    build_device = torch.device("cpu") if mode == "lanczos" else device  # lanczos is CPU-only
    w = 2 if antialias else 1
    eye = torch.eye(L, dtype=dtype, device=build_device).view(1, L, L, 1).expand(1, L, L, w).contiguous()
    kwargs = dict(mode=mode, align_corners=align_corners, antialias=antialias)
    if scale is None:
        out = F.interpolate(eye, size=(out_size, w), **kwargs)
    else:
        out = F.interpolate(
            eye, scale_factor=(scale, 1.0), recompute_scale_factor=recompute_scale_factor, **kwargs
        )
    return out[0, :, :, 0].T.contiguous().to(device)  # [O, L]


# ----------------------------------------------------------------------------------------------------------
# Methods


def _scatter_dense(index: Tensor, weight: Tensor, n: int) -> Tensor:
    """``Tensor[B, O, n]`` full-frame weight matrices from taps ``index``/``weight`` ``[B, O, K]``.

    Written as a masked sum rather than ``scatter_add_`` so that it stays deterministic on CUDA; each frame
    position matches at most one non-zero tap, so the sum is exact.
    """
    hit = index.unsqueeze(-1) == torch.arange(n, device=index.device)  # [B, O, K, n]
    return (weight.unsqueeze(-1) * hit).sum(2)


def _is_channels_last(x: Tensor) -> bool:
    return x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _apply_dense(x: Tensor, wy: Tensor, wx: Tensor) -> Tensor:
    """``Wy @ x @ Wx^T`` per sample: x ``[B, C, H, W]``, wy ``[B, Oh, H]``, wx ``[B, Ow, W]``."""
    B, C, H, W = x.shape
    Oh, Ow = wy.shape[1], wx.shape[1]
    if _is_channels_last(x):
        xl = x.permute(0, 2, 3, 1)  # [B, H, W, C], contiguous
        z = torch.bmm(wy, xl.reshape(B, H, W * C)).view(B, Oh, W, C)
        out = torch.matmul(wx.unsqueeze(1), z)  # [B, Oh, Ow, C]
        return out.permute(0, 3, 1, 2)  # channels-last [B, C, Oh, Ow]
    # Channel blocks keep the intermediates small: cache-resident, and below the size where the allocator
    # maps fresh pages on every call, which costs more than the arithmetic here. Not when autograd records:
    # it keeps every block's intermediates for the backward anyway, and each slice's backward would add a
    # full-size zero gradient of x (twice the time of one block at 8x1024x10x10 -> 10x10, fwd + bwd).
    width_first = H * W * Ow + Oh * H * Ow <= Oh * H * W + Oh * W * Ow  # fewer flops
    per_channel = B * (Oh * H + Oh * Ow + (H * Ow if width_first else Oh * W))  # intermediate elements
    recording = torch.is_grad_enabled() and x.requires_grad
    block = C if recording else max(1, min(C, _DENSE_BLOCK_ELEMS // per_channel))
    wxt = wx.transpose(1, 2)  # [B, W, Ow]
    # Height matrices repeated for each channel of a block, [B * block, Oh, H]: built once, used by all.
    wy_block = _repeat_channels(wy, block)

    def run(xb: Tensor) -> Tensor:  # [B, cb, H, W] -> [B, cb, Oh, Ow]
        cb = xb.shape[1]
        wyb = wy_block if cb == block else _repeat_channels(wy, cb)
        if width_first:
            y = torch.bmm(xb.reshape(B, cb * H, W), wxt)  # [B, cb * H, Ow]
            return torch.bmm(wyb, y.view(B * cb, H, Ow)).view(B, cb, Oh, Ow)
        z = torch.bmm(wyb, xb.reshape(B * cb, H, W))  # [B * cb, Oh, W]
        return torch.bmm(z.view(B, cb * Oh, W), wxt).view(B, cb, Oh, Ow)

    if block >= C:
        return run(x)
    out = x.new_empty(B, C, Oh, Ow)
    for c in range(0, C, block):
        out[:, c : c + block] = run(x[:, c : c + block])
    return out


def _repeat_channels(w: Tensor, n: int) -> Tensor:
    """``[B, O, L] -> [B * n, O, L]``, each sample's matrix repeated ``n`` times (sample-major)."""
    B, rows, cols = w.shape
    return w.unsqueeze(1).expand(B, n, rows, cols).reshape(B * n, rows, cols)


def _apply_taps(x: Tensor, iy: Tensor, wy: Tensor, ix: Tensor, wx: Tensor) -> Tensor:
    """Separable sums over the non-zero taps only: iy/wy ``[B, Oh, Kh]``, ix/wx ``[B, Ow, Kw]``."""
    B, C, H, W = x.shape
    Oh, Kh = iy.shape[1:]
    Ow, Kw = ix.shape[1:]
    if H * Ow * Kw + Oh * Ow * Kh <= Oh * W * Kh + Oh * Ow * Kw:  # width first
        y = _taps_last(x, ix, wx)  # [B, C, H, Ow]
        return _taps_last(y.transpose(2, 3), iy, wy).transpose(2, 3)
    z = _taps_last(x.transpose(2, 3), iy, wy)  # [B, C, W, Oh]
    return _taps_last(z.transpose(2, 3), ix, wx)


def _taps_last(t: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """Resize the last axis of ``t [B, C, M, N]`` with taps ``[B, O, K]``: returns ``[B, C, M, O]``."""
    B, C, M, _ = t.shape
    n_out, K = index.shape[1:]
    g = t.gather(3, index.view(B, 1, 1, n_out * K).expand(B, C, M, n_out * K)).view(B, C, M, n_out, K)
    if K == 1:
        return g[..., 0] * weight.view(B, 1, 1, n_out)
    return (g * weight.view(B, 1, 1, n_out, K)).sum(-1)


def _apply_gather(x: Tensor, iy: Tensor, ix: Tensor) -> Tensor:
    """Nearest modes: ``out[b, :, o, p] = x[b, :, iy[b, o], ix[b, p]]``; iy ``[B, Oh]``, ix ``[B, Ow]``."""
    B, C, H, W = x.shape
    Oh, Ow = iy.shape[1], ix.shape[1]
    flat = iy.unsqueeze(2) * W + ix.unsqueeze(1)  # [B, Oh, Ow], index into H * W
    if _is_channels_last(x):
        pixels = x.permute(0, 2, 3, 1).reshape(B * H * W, C)  # view: one row of C per pixel
        rows = flat + torch.arange(B, device=x.device).view(B, 1, 1) * (H * W)
        return pixels.index_select(0, rows.view(-1)).view(B, Oh, Ow, C).permute(0, 3, 1, 2)
    src = x.reshape(B, C, H * W)
    return src.gather(2, flat.view(B, 1, Oh * Ow).expand(B, C, Oh * Ow)).view(B, C, Oh, Ow)


def _loop(x: Tensor, boxes: Tensor, spec: _Spec) -> Tensor:
    """The reference: one ``F.interpolate`` per sample (CPU fallback only; it reads boxes on the host)."""
    kwargs = dict(
        size=spec.size,
        scale_factor=spec.scale_factor,
        mode=spec.mode,
        align_corners=spec.align_corners,
        antialias=spec.antialias,
        recompute_scale_factor=spec.recompute_scale_factor,
    )
    crops = [x[i : i + 1, :, y0:y1, x0:x1] for i, (y0, x0, y1, x1) in enumerate(boxes.tolist())]
    return torch.cat([F.interpolate(c, **kwargs) for c in crops])


# ----------------------------------------------------------------------------------------------------------
# Method choice


def _tf32_matmul_enabled() -> bool:
    return bool(torch.backends.cuda.matmul.allow_tf32) or torch.get_float32_matmul_precision() != "highest"


def _choose_method(x: Tensor, spec: _Spec, out_hw: tuple[int, int], box_hw: tuple[float, float]) -> str:
    """Pick a method from shapes only (no timing at run time); ``box_hw`` is the mean box size."""
    nearest = spec.mode in _NEAREST_MODES
    if x.device.type != "cpu":
        # Always batched off the CPU: the loop would read the boxes on the host and launch B kernels.
        if nearest:
            return "gather"
        if x.dtype != torch.float64 and _tf32_matmul_enabled():
            return "taps"  # TF32 matmuls would round x to 10 mantissa bits
        return "dense"
    if spec.antialias and (out_hw[1] == 1 or x.dtype in (torch.float16, torch.bfloat16)):
        # PyTorch's CPU antialias kernels are wrong for an output width of 1 and missing for half types.
        return "dense"
    costs = _cpu_costs_ns(x, spec, out_hw, box_hw)
    if not nearest:
        del costs["gather"]
    return min(costs, key=costs.__getitem__)


# Costs in ns of one thread, fitted on this project's 2-core Xeon (AVX-512), PyTorch 2.14, fp32 (only their
# ratios matter). Loop: per call, per output pixel (more for short rows, which vectorize poorly) and per
# kernel tap; adaptive average pooling ("area") is much slower per tap. Gather: per output pixel. Dense: per
# flop of the two matmuls and per element moved through memory (input, intermediates, output). Batched
# methods also pay a fixed cost per call (index tables, validation, a dozen small ops).
_LOOP_CALL_NS, _LOOP_OUT_NS, _LOOP_ROW_NS, _LOOP_TAP_NS, _AREA_TAP_NS = 100e3, 2.0, 60.0, 1.1, 5.0
_LOOP_BACKWARD_NS = 2.0  # per sample and element of x: each sample's slice backward fills a zero grad of x
_GATHER_CALL_NS, _GATHER_OUT_NS = 200e3, 2.45
_DENSE_CALL_NS, _DENSE_FLOP_NS, _DENSE_ELEM_NS = 350e3, 1 / 69, 0.7


def _cpu_costs_ns(
    x: Tensor, spec: _Spec, out_hw: tuple[int, int], box_hw: tuple[float, float]
) -> dict[str, float]:
    """Estimated CPU time of each method (forward, plus backward when autograd records)."""
    B, C, H, W = x.shape
    Oh, Ow = out_hw
    planes, n_out = B * C, B * C * Oh * Ow  # (sample, channel) planes, output pixels
    taps_h, taps_w = (_loop_taps(spec, box, out) for box, out in zip(box_hw, out_hw, strict=True))
    if spec.antialias:  # separable kernel: one pass per axis
        per_out = _LOOP_TAP_NS * (taps_h + taps_w)
    elif spec.mode == "area":  # adaptive average pooling over a 2-D window
        per_out = _AREA_TAP_NS * taps_h * taps_w
    else:  # 2-D kernel over taps_h x taps_w neighbours
        per_out = _LOOP_TAP_NS * taps_h * taps_w if spec.mode not in _NEAREST_MODES else 0.0
    loop = B * _LOOP_CALL_NS + n_out * (_LOOP_OUT_NS + _LOOP_ROW_NS / Ow + per_out)

    if H * W * Ow + Oh * H * Ow <= Oh * H * W + Oh * W * Ow:  # as in _dense_nchw
        flops, elems = (
            2 * planes * (H * W * Ow + Oh * H * Ow),
            planes * (H * W + 2 * H * Ow + Oh * H + Oh * Ow),
        )
    else:
        flops, elems = (
            2 * planes * (Oh * H * W + Oh * W * Ow),
            planes * (H * W + 2 * Oh * W + Oh * H + Oh * Ow),
        )
    dense = _DENSE_CALL_NS + flops * _DENSE_FLOP_NS + elems * _DENSE_ELEM_NS
    gather = _GATHER_CALL_NS + n_out * _GATHER_OUT_NS

    if torch.is_grad_enabled() and x.requires_grad:  # backward costs about as much as forward, but ...
        loop = 2 * loop + B * x.numel() * _LOOP_BACKWARD_NS  # ... B full-size zero grads for the loop
        dense, gather = 2 * dense, 2 * gather
    return {"gather": gather, "dense": dense, "loop": loop, "taps": math.inf}


def _loop_taps(spec: _Spec, box: float, out: int) -> float:
    """Input pixels read per output pixel along one axis by the native kernel, for a box side ``box``."""
    factor = max(1.0, box / out)
    if spec.antialias:
        support = {"bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}[spec.mode]
        return 2 * math.ceil(support * factor) + 1
    if spec.mode == "area":
        return math.ceil(factor) + 1
    return {"bilinear": 2.0, "bicubic": 4.0}.get(spec.mode, 1.0)
