"""crop_resize on float boxes: exactly the integer result on whole cells, the continuous extension between them
(definition in fgzoom.ops.resize_continuous), differentiable in x and in the boxes."""

from __future__ import annotations

import pytest
import torch

from fgzoom.ops import crop_resize
from tests.helpers import forbid_host_reads
from tests.test_crop_resize import expected_fn, knob_id, make_boxes, mode_knobs

CONTINUOUS = [k for k in mode_knobs() if not k[0].startswith("nearest")]


def random_float_boxes(batch: int, height: int, width: int, seed: int, min_side: float = 0.3) -> torch.Tensor:
    """Tensor[batch, 4] float64 boxes with fractional edges inside a height x width frame (some shorter than
    one cell)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        h = min_side + torch.rand((), generator=g, dtype=torch.float64) * (height - min_side)
        w = min_side + torch.rand((), generator=g, dtype=torch.float64) * (width - min_side)
        y0 = torch.rand((), generator=g, dtype=torch.float64) * (height - h)
        x0 = torch.rand((), generator=g, dtype=torch.float64) * (width - w)
        rows.append(torch.stack([y0, x0, y0 + h, x0 + w]))
    return torch.stack(rows)


def methods(mode: str) -> list[str]:
    return ["auto", "dense", "taps"] + (["gather"] if mode.startswith("nearest") else [])


@pytest.mark.parametrize("knobs", mode_knobs(), ids=knob_id)
@pytest.mark.parametrize(("frame", "size"), [((9, 8), (7, 10)), ((28, 20), (5, 3)), ((64, 48), (64, 48))])
def test_integer_valued_float_boxes_give_the_integer_result(knobs, frame, size):
    mode, align_corners, antialias = knobs
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, *frame, generator=g)
    boxes = make_boxes(8, *frame, seed=2)
    kwargs = dict(size=size, mode=mode, align_corners=align_corners, antialias=antialias)
    loop = expected_fn(x, boxes, **kwargs)
    for method in methods(mode):
        whole = crop_resize(x, boxes, method=method, **kwargs)
        got = crop_resize(x, boxes.float(), method=method, **kwargs)
        # Same weights as F.interpolate's float32 arithmetic to an ulp or two: <= 1e-6 on values in [0, 1].
        torch.testing.assert_close(got, whole, rtol=0, atol=1e-6, msg=f"method={method}")
        torch.testing.assert_close(got, loop, rtol=0, atol=1e-5, msg=f"method={method} vs the loop")


@pytest.mark.parametrize("knobs", mode_knobs(), ids=knob_id)
@pytest.mark.parametrize("recompute", [None, True])
def test_integer_valued_float_boxes_with_scale_factor(knobs, recompute):
    mode, align_corners, antialias = knobs
    x = torch.rand(3, 2, 12, 10, generator=torch.Generator().manual_seed(3))
    boxes = torch.tensor([[0, 0, 5, 6], [7, 4, 12, 10], [2, 3, 7, 9]])
    kwargs = dict(scale_factor=(1.7, 0.6), mode=mode, align_corners=align_corners, antialias=antialias,
                  recompute_scale_factor=recompute)
    expected = expected_fn(x, boxes, **kwargs)
    got = crop_resize(x, boxes.double().float(), **kwargs)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_integer_valued_float_boxes_at_a_large_frame():
    """448 px, where F.interpolate's float32 source positions have 3e-5 ulps: the fused multiply-add rule."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 448, 448, generator=g)
    boxes = torch.tensor([[0, 0, 447, 448], [13, 100, 310, 397]])
    for mode, align_corners, antialias in [("bilinear", None, False), ("bicubic", None, False),
                                           ("bilinear", None, True), ("area", None, False)]:
        kwargs = dict(size=448, mode=mode, align_corners=align_corners, antialias=antialias)
        torch.testing.assert_close(crop_resize(x, boxes.float(), **kwargs), expected_fn(x, boxes, **kwargs),
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("knobs", CONTINUOUS, ids=knob_id)
def test_continuous_in_the_box(knobs):
    """A box edge moved by 1e-3 cell moves the output by O(1e-3) (values in [0, 1]), for every mode but nearest."""
    mode, align_corners, antialias = knobs
    x = torch.rand(6, 2, 11, 13, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    boxes = random_float_boxes(6, 11, 13, seed=6)
    kwargs = dict(size=(9, 7), mode=mode, align_corners=align_corners, antialias=antialias)
    base = crop_resize(x, boxes, **kwargs)
    for k in range(4):
        step = torch.zeros_like(boxes)
        step[:, k] = 1e-3 if k < 2 else -1e-3  # keep the box inside the frame
        change = (crop_resize(x, boxes + step, **kwargs) - base).abs().max()
        assert change < 1e-2, (k, float(change))
    # and across whole cells: a box slid over 1.5 cells in steps of 1e-3 never jumps
    path = [boxes[:1] * 0 + torch.tensor([[0.2 + t, 0.3, 5.1 + t, 6.4]], dtype=torch.float64)
            for t in torch.arange(0, 1.5, 1e-3, dtype=torch.float64)]
    outs = crop_resize(x[:1].expand(len(path), -1, -1, -1), torch.cat(path), **kwargs)
    assert (outs[1:] - outs[:-1]).abs().max() < 1e-2


@pytest.mark.parametrize("knobs", [("bilinear", None, False), ("bilinear", True, False), ("bicubic", None, False),
                                   ("bicubic", True, False), ("area", None, False), ("bilinear", None, True),
                                   ("bicubic", None, True), ("lanczos", None, True)], ids=knob_id)
def test_gradcheck_in_x_and_boxes(knobs):
    mode, align_corners, antialias = knobs
    g = torch.Generator().manual_seed(7)
    x = torch.rand(3, 2, 9, 8, generator=g, dtype=torch.float64, requires_grad=True)
    boxes = random_float_boxes(3, 9, 8, seed=8).requires_grad_()

    def fn(a, b):
        return crop_resize(a, b, size=(5, 6), mode=mode, align_corners=align_corners, antialias=antialias,
                           check_boxes=False)

    assert torch.autograd.gradcheck(fn, (x, boxes), eps=1e-7, atol=1e-5)


def test_translation_by_whole_cells_gives_the_same_view():
    """Moving the content and a fractional box by the same whole number of cells changes nothing."""
    g = torch.Generator().manual_seed(9)
    x = torch.rand(1, 2, 10, 10, generator=g, dtype=torch.float64)
    box = torch.tensor([[1.35, 2.6, 6.2, 7.05]], dtype=torch.float64)
    shifted = torch.zeros(1, 2, 13, 12, dtype=torch.float64)
    shifted[:, :, 3:, 2:] = x
    for mode, align_corners, antialias in mode_knobs():
        kwargs = dict(size=(6, 5), mode=mode, align_corners=align_corners, antialias=antialias)
        a = crop_resize(x, box, **kwargs)
        b = crop_resize(shifted, box + torch.tensor([[3.0, 2.0, 3.0, 2.0]], dtype=torch.float64), **kwargs)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=mode)


def test_bilinear_reads_a_linear_ramp_at_the_real_positions():
    """On a frame linear in the row index, bilinear gives the source positions themselves: start +
    clamp(s (j + 0.5) - 0.5, 0, L - 1), F.interpolate's rule with the box's real start and length."""
    rows = torch.arange(12, dtype=torch.float64).view(1, 1, 12, 1).expand(1, 1, 12, 4).contiguous()
    y0, y1, out = 2.3, 7.9, 9
    got = crop_resize(rows, torch.tensor([[y0, 0.0, y1, 4.0]], dtype=torch.float64), size=(out, 4))[0, 0, :, 0]
    L = y1 - y0
    src = (L / out * (torch.arange(out, dtype=torch.float64) + 0.5) - 0.5).clamp(0, L - 1)
    torch.testing.assert_close(got, y0 + src, rtol=0, atol=1e-12)


def test_area_averages_partial_cells():
    """An integer length at a fractional start: each window of adaptive pooling, slid by the fraction, weighs
    the two cells it straddles by their overlap."""
    x = torch.rand(1, 1, 1, 12, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    b, L, out = 2.25, 6, 3  # windows of 2 cells: [2.25, 4.25), [4.25, 6.25), [6.25, 8.25)
    got = crop_resize(x, torch.tensor([[0.0, b, 1.0, b + L]], dtype=torch.float64), size=(1, out), mode="area")
    v = x[0, 0, 0]
    expected = torch.stack([(0.75 * v[s] + v[s + 1] + 0.25 * v[s + 2]) / 2 for s in (2, 4, 6)])
    torch.testing.assert_close(got[0, 0, 0], expected, rtol=0, atol=1e-12)


def test_a_box_inside_one_cell():
    """Nearest, area and the antialias filters read the cell; bilinear and bicubic read the frame at the box's
    centre (their positions clamp to it), so the view is constant either way."""
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    boxes = torch.tensor([[2.2, 3.1, 2.7, 3.8], [0.0, 5.05, 0.5, 5.95]], dtype=torch.float64)
    cell = torch.stack([x[0, :, 2, 3], x[1, :, 0, 5]])
    # centres in cell-index units: (1.95, 2.95) and (-0.25 -> clamped by the frame to 0, 5.0)
    centre = torch.stack([0.05 * 0.05 * x[0, :, 1, 2] + 0.05 * 0.95 * x[0, :, 1, 3] + 0.95 * 0.05 * x[0, :, 2, 2]
                          + 0.95 * 0.95 * x[0, :, 2, 3], x[1, :, 0, 5]])
    for mode, align_corners, antialias in mode_knobs():
        out = crop_resize(x, boxes, size=(4, 3), mode=mode, align_corners=align_corners, antialias=antialias)
        reads_centre = mode in ("bilinear", "bicubic") and not antialias
        expected = (centre if mode == "bilinear" and not antialias else cell)[:, :, None, None].expand_as(out)
        if reads_centre and mode == "bicubic":  # cubic weights of the clamped taps: constant, not checked here
            expected = out[:, :, :1, :1].expand_as(out)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12, msg=f"{mode} {align_corners} {antialias}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_and_channels_last(dtype):
    g = torch.Generator().manual_seed(12)
    x = torch.rand(4, 8, 14, 14, generator=g)
    boxes = random_float_boxes(4, 14, 14, seed=13).float()
    for mode, align_corners, antialias in [("bilinear", None, False), ("bicubic", None, True), ("area", None, False),
                                           ("nearest", None, False)]:
        kwargs = dict(size=(14, 14), mode=mode, align_corners=align_corners, antialias=antialias)
        full = crop_resize(x, boxes, **kwargs)
        half = crop_resize(x.to(dtype), boxes, **kwargs)
        assert half.dtype == dtype
        torch.testing.assert_close(half.float(), full, rtol=0, atol=2e-2)
        cl = crop_resize(x.contiguous(memory_format=torch.channels_last), boxes, **kwargs)
        assert cl.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(cl, full, rtol=0, atol=1e-6)


@pytest.mark.parametrize("knobs", [("bilinear", None, False), ("bicubic", True, False), ("area", None, False),
                                   ("nearest", None, False), ("lanczos", None, True)], ids=knob_id)
def test_float_boxes_read_nothing_back_to_the_host(monkeypatch, knobs):
    mode, align_corners, antialias = knobs
    x = torch.randn(5, 6, 9, 8, generator=torch.Generator().manual_seed(14), requires_grad=True)
    boxes = random_float_boxes(5, 9, 8, seed=15).float().requires_grad_()
    kwargs = dict(size=(7, 10), mode=mode, align_corners=align_corners, antialias=antialias)
    expected = crop_resize(x, boxes, **kwargs)

    with forbid_host_reads(monkeypatch):
        got = crop_resize(x, boxes, check_boxes=False, **kwargs)
        got.sum().backward()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert x.grad is not None
    if mode != "nearest":  # nearest is piecewise constant in the box: no gradient flows to it
        assert boxes.grad is not None and torch.isfinite(boxes.grad).all() and boxes.grad.abs().sum() > 0


def test_loop_method_needs_integer_boxes():
    with pytest.raises(ValueError, match="method='loop' runs F.interpolate on integer slices"):
        crop_resize(torch.rand(1, 1, 4, 4), torch.tensor([[0.5, 0.0, 3.0, 4.0]]), size=2, method="loop")


def test_taps_and_dense_agree_and_weights_sum_to_one_on_random_frames():
    """The tap windows hold every non-zero weight (their size is bounded from the frame, not read from the
    boxes): the sparse taps give the dense result, and a constant frame stays constant, for random frames,
    output sizes and boxes down to 1e-3 cell, every mode."""
    g = torch.Generator().manual_seed(16)
    for _ in range(20):
        H, W, oh, ow = (int(v) for v in torch.randint(1, 41, (4,), generator=g))
        x = torch.rand(3, 2, H, W, generator=g, dtype=torch.float64)
        boxes = random_float_boxes(3, H, W, seed=int(torch.randint(0, 1000, (1,), generator=g)), min_side=1e-3)
        for mode, align_corners, antialias in mode_knobs():
            kwargs = dict(size=(oh, ow), mode=mode, align_corners=align_corners, antialias=antialias)
            dense = crop_resize(x, boxes, method="dense", **kwargs)
            torch.testing.assert_close(crop_resize(x, boxes, method="taps", **kwargs), dense, rtol=0, atol=1e-12)
            ones = crop_resize(torch.ones_like(x), boxes, method="taps", **kwargs)
            torch.testing.assert_close(ones, torch.ones_like(ones), rtol=0, atol=1e-12)
