"""Benchmark ``crop_resize`` against the per-sample ``F.interpolate`` loop it replaces.

``bench_crop_resize`` times both on random boxes covering 30-100% of each side (seeded), output size equal
to the input size unless a shape gives it, and returns one row per (shape, mode); ``format_table`` renders
rows as a markdown table. ``bench_samplers`` times the zoom's three samplers (continuous, slice, grid_sample)
on fractional boxes, forward + backward. Timings are medians over ``repeats`` runs after warm-up, the two contenders
interleaved run by run so that machine noise hits both alike; the thread count is left as it is.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fgzoom.ops.crop_resize import crop_resize
from fgzoom.ops.interpolation import interp_label, resize_spec
from fgzoom.ops.resize_cost import choose_method

__all__ = ["bench_crop_resize", "bench_samplers", "crop_resize_loop", "float_boxes", "format_sampler_table",
           "format_table", "random_boxes"]


def crop_resize_loop(x: Tensor, boxes: Tensor, **kwargs: Any) -> Tensor:
    """The reference: ``F.interpolate`` of each sample's box, concatenated. Returns ``Tensor[B, C, Oh, Ow]``."""
    crops = [x[i : i + 1, :, y0:y1, x0:x1] for i, (y0, x0, y1, x1) in enumerate(boxes.tolist())]
    return torch.cat([F.interpolate(c, **kwargs) for c in crops])


def random_boxes(
    batch: int, height: int, width: int, *, min_frac: float = 0.3, seed: int = 0, device: str = "cpu"
) -> Tensor:
    """``Tensor[B, 4]`` int64 ``(y0, x0, y1, x1)`` boxes whose sides are ``min_frac``..100% of the frame's."""
    g = torch.Generator().manual_seed(seed)
    sides = []
    for n in (height, width):
        lo = max(1, round(min_frac * n))
        side = torch.randint(lo, n + 1, (batch,), generator=g)
        start = (torch.rand(batch, generator=g) * (n - side + 1)).long()
        sides.append((start, start + side))
    (y0, y1), (x0, x1) = sides
    return torch.stack([y0, x0, y1, x1], dim=1).to(device)


def _time_pair(
    fns: Sequence[Callable[[], Any]], repeats: int, warmup: int, device: torch.device
) -> list[float]:
    """Median milliseconds of each function, interleaved run by run."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(ts) for ts in times]


def bench_crop_resize(
    shapes: Sequence[Sequence[int]],
    modes: Sequence[str | Mapping[str, Any]],
    repeats: int = 10,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Time ``crop_resize`` and the reference loop on each shape and mode (fp32, forward only).

    Args:
        shapes: ``(B, C, H, W)`` frames, output size ``(H, W)``; or ``(B, C, H, W, Oh, Ow)``.
        modes: a mode string (default knobs) or a mapping with ``"mode"`` and any of ``align_corners``,
            ``antialias``, e.g. ``{"mode": "bilinear", "antialias": True}``.
        repeats: timed runs per contender (median reported), after two warm-up runs.
        device: where to run.

    Returns:
        One dict per (shape, mode): ``shape``, ``mode``, ``knobs`` (dict), ``method`` (what ``crop_resize``
        picked), ``loop_ms``, ``crop_resize_ms``, ``speedup`` (loop / crop_resize), ``max_abs_err``.
    """
    device = torch.device(device)
    rows = []
    for shape in shapes:
        B, C, H, W = shape[:4]
        out_hw = (shape[4], shape[5]) if len(shape) == 6 else (H, W)
        x = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0)).to(device)
        boxes = random_boxes(B, H, W, seed=1, device=str(device))
        mean_hw = (
            (boxes[:, 2] - boxes[:, 0]).double().mean().item(),
            (boxes[:, 3] - boxes[:, 1]).double().mean().item(),
        )
        for m in modes:
            knobs = {} if isinstance(m, str) else {k: v for k, v in m.items() if k != "mode"}
            mode = m if isinstance(m, str) else m["mode"]
            kwargs = dict(size=out_hw, mode=mode, **knobs)
            spec = resize_spec(mode, knobs.get("align_corners"), knobs.get("antialias", False), size=out_hw)
            with torch.no_grad():
                err = (crop_resize(x, boxes, **kwargs) - crop_resize_loop(x, boxes, **kwargs)).abs().max()
                loop_ms, fast_ms = _time_pair(
                    [
                        functools.partial(crop_resize_loop, x, boxes, **kwargs),
                        functools.partial(crop_resize, x, boxes, **kwargs),
                    ],
                    repeats=repeats,
                    warmup=2,
                    device=device,
                )
            rows.append(
                {
                    "shape": f"{B}x{C}x{H}x{W}->{out_hw[0]}x{out_hw[1]}",
                    "mode": mode,
                    "knobs": knobs,
                    "method": choose_method(x, spec, out_hw, mean_hw),
                    "loop_ms": loop_ms,
                    "crop_resize_ms": fast_ms,
                    "speedup": loop_ms / fast_ms,
                    "max_abs_err": float(err),
                }
            )
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of ``bench_crop_resize`` rows: shape, setting (``interp_label``), loop ms, crop_resize ms,
    speedup, method."""
    lines = [
        "| shape | setting | loop ms | crop_resize ms | speedup | method |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        knobs = r["knobs"]
        setting = interp_label(r["mode"], knobs.get("align_corners"), knobs.get("antialias", False))
        lines.append(
            f"| {r['shape']} | {setting} | {r['loop_ms']:.2f} | {r['crop_resize_ms']:.2f} "
            f"| {r['speedup']:.2f}x | {r.get('method', '')} |"
        )
    return "\n".join(lines)


def float_boxes(batch: int, height: int, width: int, *, min_frac: float = 0.3, seed: int = 0,
                device: str = "cpu") -> Tensor:
    """``Tensor[B, 4]`` float32 boxes with fractional edges, sides ``min_frac``..100% of the frame's."""
    g = torch.Generator().manual_seed(seed)
    sides = []
    for n in (height, width):
        side = (min_frac + (1 - min_frac) * torch.rand(batch, generator=g)) * n
        start = torch.rand(batch, generator=g) * (n - side)
        sides.append((start, start + side))
    (y0, y1), (x0, x1) = sides
    return torch.stack([y0, x0, y1, x1], dim=1).to(device)


def bench_samplers(
    shapes: Sequence[Sequence[int]],
    modes: Sequence[str | Mapping[str, Any]],
    repeats: int = 10,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Time the zoom's three samplers on each shape and mode, forward + backward (as in training), fp32:
    ``continuous`` (``crop_resize`` of fractional float boxes), ``slice`` (``crop_resize`` of the same boxes
    rounded outward) and ``grid_sample`` (``crop_affine``; nearest, bilinear and bicubic without antialias).

    Returns:
        One dict per (shape, mode): ``shape``, ``mode``, ``knobs``, ``continuous_ms``, ``slice_ms``,
        ``grid_sample_ms`` (None where it does not take the mode), each the median of ``repeats`` runs.
    """
    from fgzoom.ops.boxes import round_boxes
    from fgzoom.ops.crop_affine import AFFINE_MODES, crop_affine

    device = torch.device(device)
    rows = []
    for shape in shapes:
        B, C, H, W = shape[:4]
        out_hw = (shape[4], shape[5]) if len(shape) == 6 else (H, W)
        x = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0)).to(device).requires_grad_()
        boxes = float_boxes(B, H, W, seed=1, device=str(device))
        cells = round_boxes(boxes, (H, W))
        for m in modes:
            knobs = {} if isinstance(m, str) else {k: v for k, v in m.items() if k != "mode"}
            mode = m if isinstance(m, str) else m["mode"]
            kwargs = dict(size=out_hw, mode=mode, **knobs)

            fns = [functools.partial(_forward_backward, crop_resize, x, boxes, check_boxes=False, **kwargs),
                   functools.partial(_forward_backward, crop_resize, x, cells, check_boxes=False, **kwargs)]
            affine = mode in AFFINE_MODES and not knobs.get("antialias")
            if affine:
                fns.append(functools.partial(_forward_backward, crop_affine, x, boxes, out_hw, mode=mode,
                                             align_corners=bool(knobs.get("align_corners"))))
            times = _time_pair(fns, repeats=repeats, warmup=2, device=device)
            rows.append({"shape": f"{B}x{C}x{H}x{W}->{out_hw[0]}x{out_hw[1]}", "mode": mode, "knobs": knobs,
                         "continuous_ms": times[0], "slice_ms": times[1],
                         "grid_sample_ms": times[2] if affine else None})
    return rows


def _forward_backward(fn: Callable[..., Tensor], *args: Any, **kwargs: Any) -> None:
    """``fn(*args, **kwargs)`` and the backward of its sum (a training step's work on the crop)."""
    fn(*args, **kwargs).sum().backward()


def format_sampler_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of ``bench_samplers`` rows: ms per sampler and continuous over grid_sample."""
    lines = ["| shape | setting | continuous ms | slice ms | grid_sample ms | continuous / grid_sample |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        setting = interp_label(r["mode"], r["knobs"].get("align_corners"), r["knobs"].get("antialias", False))
        grid = r["grid_sample_ms"]
        lines.append(f"| {r['shape']} | {setting} | {r['continuous_ms']:.2f} | {r['slice_ms']:.2f} | "
                     + ("– | – |" if grid is None else f"{grid:.2f} | {r['continuous_ms'] / grid:.2f}x |"))
    return "\n".join(lines)
