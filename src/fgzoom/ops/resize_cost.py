"""Which ``crop_resize`` method to run: a rule per device and a CPU cost model, from shapes only.

On CUDA: ``"gather"`` for nearest modes, else ``"dense"``, or ``"taps"`` when TF32 matmuls are enabled
(they would round ``x`` to 10 mantissa bits); never the loop (it reads the boxes on the host and launches
one kernel per sample). On CPU: ``"dense"`` where PyTorch's antialias kernels fail (an output width of 1
gives a wrong result, half types have no kernel); elsewhere a cost model on the shapes (fitted on this
project's 2-core machine, no timing at run time) picks the cheapest of ``"gather"``/``"dense"``/``"loop"``:
the batched methods for feature maps, the native per-sample kernels for large images with few channels.
When autograd records, the loop's backward (one full-size zero gradient of ``x`` per sample) is counted
too, which rules it out for feature maps in training.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fgzoom.ops.interpolation import NEAREST_MODES, ResizeSpec

__all__ = ["choose_method", "choose_float_method", "cpu_costs_ns"]


def choose_float_method(x: Tensor, spec: ResizeSpec) -> str:
    """The method ``crop_resize(..., method="auto")`` runs for float boxes, from the mode, dtype and device
    only (never the batch size, so a traced or exported model keeps a dynamic batch): ``"gather"`` for the
    nearest modes; else ``"dense"`` (two batched matmuls; on the CPU as fast as the sparse taps at image
    size and several times faster on feature maps), or ``"taps"`` on CUDA with TF32 matmuls enabled."""
    if spec.mode in NEAREST_MODES:
        return "gather"
    if x.device.type != "cpu" and x.dtype != torch.float64 and _tf32_matmul_enabled():
        return "taps"  # TF32 matmuls would round x to 10 mantissa bits
    return "dense"


def choose_method(x: Tensor, spec: ResizeSpec, out_hw: tuple[int, int], box_hw: tuple[float, float]) -> str:
    """The method ``crop_resize(..., method="auto")`` runs, picked from shapes only (no timing, no host read).

    Args:
        x: ``Tensor[B, C, H, W]`` floating; only its shape, dtype, device and ``requires_grad`` are read.
        spec: the validated resize arguments (``resize_spec``).
        out_hw: ``(Oh, Ow)``, the output size.
        box_hw: mean box ``(height, width)`` in pixels (the frame size when unknown).

    Returns:
        One of ``"gather"`` (nearest modes only), ``"dense"``, ``"taps"`` (CUDA with TF32 only), ``"loop"``
        (CPU only).
    """
    nearest = spec.mode in NEAREST_MODES
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
    costs = cpu_costs_ns(x, spec, out_hw, box_hw)
    if not nearest:
        del costs["gather"]
    return min(costs, key=costs.__getitem__)


def _tf32_matmul_enabled() -> bool:
    return bool(torch.backends.cuda.matmul.allow_tf32) or torch.get_float32_matmul_precision() != "highest"


# Costs in ns of one thread, fitted on this project's 2-core Xeon (AVX-512), PyTorch 2.14, fp32 (only their
# ratios matter). Loop: per call, per output pixel (more for short rows, which vectorize poorly) and per
# kernel tap; adaptive average pooling ("area") is much slower per tap. Gather: per output pixel. Dense: per
# flop of the two matmuls and per element moved through memory (input, intermediates, output). Batched
# methods also pay a fixed cost per call (index tables, validation, a dozen small ops).
_LOOP_CALL_NS, _LOOP_OUT_NS, _LOOP_ROW_NS, _LOOP_TAP_NS, _AREA_TAP_NS = 100e3, 2.0, 60.0, 1.1, 5.0
_LOOP_BACKWARD_NS = 2.0  # per sample and element of x: each sample's slice backward fills a zero grad of x
_GATHER_CALL_NS, _GATHER_OUT_NS = 200e3, 2.45
_DENSE_CALL_NS, _DENSE_FLOP_NS, _DENSE_ELEM_NS = 350e3, 1 / 69, 0.7


def cpu_costs_ns(
    x: Tensor, spec: ResizeSpec, out_hw: tuple[int, int], box_hw: tuple[float, float]
) -> dict[str, float]:
    """Estimated CPU time in ns of each method on ``x`` ``Tensor[B, C, H, W]`` (forward, plus backward when
    autograd records); arguments as in ``choose_method``.

    Returns:
        ``{"gather": ns, "dense": ns, "loop": ns, "taps": inf}`` (taps is never the CPU's choice; gather is
        valid for nearest modes only).
    """
    B, C, H, W = x.shape
    Oh, Ow = out_hw
    planes, n_out = B * C, B * C * Oh * Ow  # (sample, channel) planes, output pixels
    taps_h, taps_w = (_loop_taps(spec, box, out) for box, out in zip(box_hw, out_hw, strict=True))
    if spec.antialias:  # separable kernel: one pass per axis
        per_out = _LOOP_TAP_NS * (taps_h + taps_w)
    elif spec.mode == "area":  # adaptive average pooling over a 2-D window
        per_out = _AREA_TAP_NS * taps_h * taps_w
    else:  # 2-D kernel over taps_h x taps_w neighbours
        per_out = _LOOP_TAP_NS * taps_h * taps_w if spec.mode not in NEAREST_MODES else 0.0
    loop = B * _LOOP_CALL_NS + n_out * (_LOOP_OUT_NS + _LOOP_ROW_NS / Ow + per_out)

    if H * W * Ow + Oh * H * Ow <= Oh * H * W + Oh * W * Ow:  # the dense kernel's order of the two products
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


def _loop_taps(spec: ResizeSpec, box: float, out: int) -> float:
    """Input pixels read per output pixel along one axis by the native kernel, for a box side ``box``."""
    factor = max(1.0, box / out)
    if spec.antialias:
        support = {"bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}[spec.mode]
        return 2 * math.ceil(support * factor) + 1
    if spec.mode == "area":
        return math.ceil(factor) + 1
    return {"bilinear": 2.0, "bicubic": 4.0}.get(spec.mode, 1.0)
