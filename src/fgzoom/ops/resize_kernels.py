"""The weight tables and kernels behind ``crop_resize``: how a batch of boxes is resized once a method is chosen.

Every 2-D mode of ``F.interpolate`` is separable: the output is ``Wy @ crop @ Wx^T`` with one weight matrix
per axis (nearest, bilinear, bicubic with its border clamping, the antialiasing filters and adaptive average
pooling all factor this way). The weights for a crop of length ``L`` resized to ``O`` are read off
``F.interpolate`` itself, applied to an identity matrix, so PyTorch's own index and scale arithmetic is
reused exactly; they are cached as sparse taps (index, weight) for every ``L`` of the frame, once per
``(frame size, O or scale, mode, knobs, dtype, device)``. Each sample picks its row of the table by its box
length and shifts it by its box start on the device, so there is no per-sample host sync.

Methods (``METHODS`` without ``"auto"``):

* ``"gather"`` (nearest modes): one index gather of the selected pixels.
* ``"dense"``: taps expanded into full-frame matrices ``Wy[B, Oh, H]``, ``Wx[B, Ow, W]`` (zero outside the
  box), then two batched matmuls, in channel blocks of at most ``DENSE_BLOCK_ELEMS`` intermediate elements
  that keep the intermediates in cache. Cheapest for small frames with many channels (feature maps).
* ``"taps"``: the same sums over the few non-zero taps with gathers instead of matmuls.
* ``"loop"``: the reference loop itself, one ``F.interpolate`` per sample (reads the boxes on the host).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from fgzoom.ops.interpolation import ResizeSpec
from fgzoom.ops.resize_continuous import axis_taps

__all__ = ["DENSE_BLOCK_ELEMS", "KERNELS", "resize_boxes", "resize_float_boxes"]

KERNELS = ("gather", "dense", "taps", "loop")
DENSE_BLOCK_ELEMS = 1 << 20  # intermediate elements per channel block of the dense method


def resize_boxes(
    x: Tensor,
    boxes: Tensor,
    spec: ResizeSpec,
    out_hw: tuple[int, int],
    method: str,
    common_hw: tuple[int, int] | None = None,
) -> Tensor:
    """Crop ``boxes`` out of ``x`` and resize each to ``out_hw`` with ``method``; no argument checks.

    Args:
        x: ``Tensor[B, C, H, W]`` floating, ``B >= 1``.
        boxes: ``Tensor[B, 4]`` int64 on ``x.device``, ``(y0, x0, y1, x1)``, end-exclusive, valid and
            non-empty (the caller checks them).
        spec: the validated resize arguments (``resize_spec``).
        out_hw: ``(Oh, Ow)``, the output size (``spec.size``, or the box size times ``spec.scale_factor``).
        method: one of ``KERNELS``; ``"gather"`` only for ``NEAREST_MODES``.
        common_hw: ``(h, w)`` shared by every box; required with ``spec.scale_factor`` (the tables then
            cover that one length), else None (the tables cover every length ``1..H``, ``1..W``).

    Returns:
        ``Tensor[B, C, Oh, Ow]`` with ``x``'s dtype, device and memory format (channels-last in, out).
    """
    if method == "loop":
        return _loop(x, boxes, spec)
    B, C, H, W = x.shape
    y0, x0, y1, x1 = boxes.unbind(1)  # [B] each
    # Per axis: the table covers every crop length 1..H (size given) or the one common length (scale).
    lo_h, hi_h = (1, H) if common_hw is None else (common_hw[0], common_hw[0])
    lo_w, hi_w = (1, W) if common_hw is None else (common_hw[1], common_hw[1])
    table_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    knobs = (
        spec.mode,
        spec.align_corners,
        spec.antialias,
        spec.recompute_scale_factor,
        table_dtype,
        x.device,
    )
    scale_h, scale_w = (None, None) if spec.scale_factor is None else spec.scale_factor
    idx_h, w_h = _axis_taps(lo_h, hi_h, out_hw[0], scale_h, *knobs)  # [nL, Oh, Kh]
    idx_w, w_w = _axis_taps(lo_w, hi_w, out_hw[1], scale_w, *knobs)  # [nL, Ow, Kw]
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


def resize_float_boxes(x: Tensor, boxes: Tensor, spec: ResizeSpec, out_hw: tuple[int, int], method: str) -> Tensor:
    """Crop float ``boxes`` out of ``x`` and resize each to ``out_hw``: the continuous rule of
    ``fgzoom.ops.resize_continuous``, with weights built on the device from the boxes; no argument checks.

    Args:
        x: ``Tensor[B, C, H, W]`` floating, ``B >= 1``.
        boxes: ``Tensor[B, 4]`` floating on ``x.device``, ``(y0, x0, y1, x1)`` in grid coordinates, inside the
            frame and of positive size (the caller checks them). Gradients flow into them.
        spec, out_hw: as in ``resize_boxes``.
        method: ``"gather"`` (nearest modes), ``"dense"`` or ``"taps"``.

    Returns:
        ``Tensor[B, C, Oh, Ow]`` with ``x``'s dtype, device and memory format.
    """
    B, C, H, W = x.shape
    y0, x0, y1, x1 = boxes.unbind(1)
    crop_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    rescale = spec.scale_factor is not None and not spec.recompute_scale_factor
    scale_h, scale_w = spec.scale_factor if rescale else (None, None)
    dense = method == "dense"
    iy, wy = axis_taps(y0, y1 - y0, H, out_hw[0], spec, scale_h, crop_dtype, dense)  # [B, Oh, Kh]
    ix, wx = axis_taps(x0, x1 - x0, W, out_hw[1], spec, scale_w, crop_dtype, dense)  # [B, Ow, Kw]
    if method == "gather":
        out = _apply_gather(x, iy[..., 0], ix[..., 0])
    else:
        xc = x if x.dtype in (torch.float32, torch.float64) else x.float()
        wy, wx = wy.to(xc.dtype), wx.to(xc.dtype)
        out = _apply_dense(xc, wy, wx) if dense else _apply_taps(xc, iy, wy, ix, wx)
        out = out.to(x.dtype)
    fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return out.contiguous(memory_format=fmt)


def _is_channels_last(x: Tensor) -> bool:
    """Whether ``x`` ``Tensor[B, C, H, W]`` is laid out channels-last (and not also plain contiguous)."""
    return x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


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
    recording = torch.is_grad_enabled() and (x.requires_grad or wy.requires_grad or wx.requires_grad)
    # A traced program (torch.export, torch.compile) runs one block: the block size depends on the batch size.
    whole = recording or torch.compiler.is_compiling()
    block = C if whole else max(1, min(C, DENSE_BLOCK_ELEMS // per_channel))
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


def _loop(x: Tensor, boxes: Tensor, spec: ResizeSpec) -> Tensor:
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
