"""crop_affine (affine_grid + grid_sample) against crop_resize where the two are defined to agree, the
documented sample positions, sub-cell boxes, gradients, bf16, errors and CPU/CUDA agreement."""

from __future__ import annotations

import pytest
import torch

from fgzoom.ops import crop_resize
from fgzoom.ops.crop_affine import crop_affine

# Integer boxes on an 11 x 13 frame: whole frame, 1x1 cells (inside, both corners), a 1-cell-tall and a
# 1-cell-wide strip, and two ordinary boxes.
INT_BOXES = [
    (0, 0, 11, 13),
    (4, 5, 5, 6),
    (0, 0, 1, 1),
    (10, 12, 11, 13),
    (3, 0, 4, 13),
    (0, 7, 11, 8),
    (2, 3, 9, 10),
    (5, 1, 11, 6),
]
# larger and smaller than the boxes, the frame size, and 1-sample sides
SIZES = [(11, 13), (23, 29), (4, 3), (1, 1), (1, 6), (5, 1), (2, 2)]


def frame(n, c=3, h=11, w=13, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_crop_resize_bilinear_align_corners_on_integer_boxes(size):
    boxes = torch.tensor(INT_BOXES, dtype=torch.int64)
    x = frame(len(boxes))
    expected = crop_resize(x, boxes, size=size, mode="bilinear", align_corners=True)
    got = crop_affine(x, boxes.float(), size, mode="bilinear", align_corners=True)
    assert got.shape == expected.shape == (len(boxes), 3, *size)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_whole_frame_at_frame_size_is_the_identity():
    x = frame(2)
    boxes = torch.tensor([[0.0, 0.0, 11.0, 13.0]] * 2)
    for align_corners in (False, True):
        got = crop_affine(x, boxes, (11, 13), mode="bilinear", align_corners=align_corners)
        torch.testing.assert_close(got, x, atol=1e-5, rtol=0)


def ramp(h=11, w=13, dtype=torch.float64):
    """x[0, 0] = the row index, x[0, 1] = the column index: bilinear reads position p (cell units, cell i
    centred at i + 0.5) as p - 0.5 wherever p lies between the first and last cell centres."""
    ys = torch.arange(h, dtype=dtype)[:, None].expand(h, w)
    xs = torch.arange(w, dtype=dtype)[None, :].expand(h, w)
    return torch.stack([ys, xs])[None]


@pytest.mark.parametrize("align_corners", [False, True])
def test_samples_sit_where_the_docstring_says(align_corners):
    # interior fractional box, so no sample reaches the border padding
    y0, x0, y1, x1 = 2.3, 3.7, 7.9, 10.2
    oh, ow = 5, 7
    got = crop_affine(ramp(), torch.tensor([[y0, x0, y1, x1]], dtype=torch.float64), (oh, ow),
                      mode="bilinear", align_corners=align_corners)
    jy, jx = torch.arange(oh, dtype=torch.float64), torch.arange(ow, dtype=torch.float64)
    if align_corners:  # b + 0.5 + j (L - 1) / (O - 1), read as that minus 0.5
        rows = y0 + jy * (y1 - y0 - 1) / (oh - 1)
        cols = x0 + jx * (x1 - x0 - 1) / (ow - 1)
    else:  # b + (j + 0.5) L / O
        rows = y0 + (jy + 0.5) * (y1 - y0) / oh - 0.5
        cols = x0 + (jx + 0.5) * (x1 - x0) / ow - 0.5
    torch.testing.assert_close(got[0, 0], rows[:, None].expand(oh, ow), atol=1e-10, rtol=0)
    torch.testing.assert_close(got[0, 1], cols[None, :].expand(oh, ow), atol=1e-10, rtol=0)


def test_box_narrower_than_one_cell_resolves_inside_the_cell():
    # a box 0.4 x 0.6 of a cell, inside cell (4, 6): the samples still move across it
    box = torch.tensor([[4.3, 6.2, 4.7, 6.8]], dtype=torch.float64)
    got = crop_affine(ramp(), box, (4, 6), mode="bilinear", align_corners=False)
    assert torch.isfinite(got).all()
    rows, cols = got[0, 0], got[0, 1]
    assert (rows.diff(dim=0) > 0).all() and (cols.diff(dim=1) > 0).all()  # not constant, increasing
    assert rows.min() > 3.7 and rows.max() < 4.3 and cols.min() > 5.7 and cols.max() < 6.4  # within the cell
    # and a smaller box about the same centre gives a narrower spread of values
    inner = crop_affine(ramp(), torch.tensor([[4.45, 6.4, 4.55, 6.6]], dtype=torch.float64), (4, 6),
                        mode="bilinear", align_corners=False)
    assert 0 < inner[0, 1].max() - inner[0, 1].min() < cols.max() - cols.min()
    # on random input too: finite and not constant
    x = frame(1, c=2, dtype=torch.float32)
    out = crop_affine(x, box.float(), (4, 6), mode="bilinear", align_corners=False)
    assert torch.isfinite(out).all() and out.flatten(2).std(dim=2).min() > 0


def test_box_narrower_than_one_cell_with_align_corners_reads_one_cell_about_its_centre():
    # documented: widened to one cell about its centre (4.5, 6.5), i.e. exactly cell (4, 6)
    x = frame(1)
    got = crop_affine(x, torch.tensor([[4.3, 6.2, 4.7, 6.8]]), (3, 2), mode="bilinear", align_corners=True)
    torch.testing.assert_close(got, x[:, :, 4:5, 6:7].expand(1, 3, 3, 2), atol=1e-5, rtol=0)


def fractional_boxes(n, h=11, w=13, seed=0):
    """Random interior boxes with fractional edges, each side at least 1.5 cells (away from the one-cell
    widening kink of align_corners=True)."""
    g = torch.Generator().manual_seed(seed)
    y0 = torch.rand(n, generator=g, dtype=torch.float64) * (h / 2 - 1) + 0.3
    x0 = torch.rand(n, generator=g, dtype=torch.float64) * (w / 2 - 1) + 0.3
    hh = 1.5 + torch.rand(n, generator=g, dtype=torch.float64) * (h / 2 - 2)
    ww = 1.5 + torch.rand(n, generator=g, dtype=torch.float64) * (w / 2 - 2)
    return torch.stack([y0, x0, y0 + hh, x0 + ww], dim=1)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_gradcheck_wrt_boxes(mode, align_corners):
    x = frame(3, c=2, h=9, w=10, dtype=torch.float64, seed=1)
    boxes = fractional_boxes(3, 9, 10, seed=2).requires_grad_(True)
    fn = lambda b: crop_affine(x, b, (4, 5), mode=mode, align_corners=align_corners)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (boxes,), eps=1e-6, atol=1e-5)
    (grad,) = torch.autograd.grad(fn(boxes).square().sum(), boxes)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_gradcheck_wrt_x(mode):
    x = frame(2, c=2, h=6, w=7, dtype=torch.float64, seed=3).requires_grad_(True)
    boxes = fractional_boxes(2, 6, 7, seed=4)
    fn = lambda t: crop_affine(t, boxes, (3, 4), mode=mode)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)


def test_bf16_runs_and_is_close_to_fp32():
    # smooth input, so the bf16 rounding of the sample grid moves values little
    h, w = 24, 28
    ys = torch.linspace(0, 3, h)[:, None]
    xs = torch.linspace(0, 2, w)[None, :]
    x = torch.stack([torch.sin(ys + xs), torch.cos(ys - xs)])[None].expand(3, 2, h, w).contiguous()
    boxes = torch.tensor([[0.0, 0.0, 24.0, 28.0], [3.2, 4.7, 17.9, 20.1], [10.1, 11.3, 10.6, 11.9]])
    for mode in ("bilinear", "bicubic", "nearest"):
        ref = crop_affine(x, boxes, (9, 7), mode=mode)
        got = crop_affine(x.bfloat16(), boxes, (9, 7), mode=mode)
        assert got.dtype == torch.bfloat16 and torch.isfinite(got.float()).all()
        # loose: the sample grid is rounded to bf16 as well (values here are within [-1, 1])
        tol = 0.2 if mode == "nearest" else 0.1  # nearest may round to the neighbouring cell
        torch.testing.assert_close(got.float(), ref, atol=tol, rtol=0)


def test_bf16_on_a_large_frame_has_no_nan():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 320, 320, generator=g).bfloat16()
    boxes = torch.tensor([[0.0, 0.0, 320.0, 320.0], [10.5, 20.25, 300.0, 310.0]])
    for _ in range(3):
        assert not torch.isnan(crop_affine(x, boxes, (160, 160))).any()


def test_gradient_flows_to_boxes_in_bf16():
    x = frame(2, c=2).bfloat16()
    boxes = fractional_boxes(2).float().requires_grad_(True)
    crop_affine(x, boxes, (5, 5)).float().square().sum().backward()
    assert boxes.grad is not None and torch.isfinite(boxes.grad).all() and boxes.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("x_shape", "boxes_shape", "kwargs"),
    [
        ((2, 3, 8, 8), (2, 4), {"mode": "area"}),
        ((2, 3, 8, 8), (2, 4), {"mode": "nearest-exact"}),
        ((3, 8, 8), (3, 4), {}),  # x not 4-D
        ((2, 3, 8, 8), (2, 3), {}),  # boxes not [N, 4]
        ((2, 3, 8, 8), (3, 4), {}),  # one box per sample
        ((2, 3, 8, 8), (2, 1, 4), {}),
    ],
)
def test_bad_mode_or_shapes_raise_value_error(x_shape, boxes_shape, kwargs):
    x = torch.zeros(x_shape)
    boxes = torch.tensor([0.0, 0.0, 4.0, 4.0]).expand(*boxes_shape[:-1], 4)[..., : boxes_shape[-1]]
    with pytest.raises(ValueError, match="crop_affine"):
        crop_affine(x, boxes, (4, 4), **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_cuda_matches_cpu(mode, align_corners):
    x = frame(8, c=4, h=11, w=13)
    boxes = torch.cat([torch.tensor(INT_BOXES, dtype=torch.float32)[:4], fractional_boxes(4).float()])
    if mode == "nearest":  # integer boxes put samples on cell edges, where rounding may go either way
        boxes = fractional_boxes(8).float()
    cpu = crop_affine(x, boxes, (7, 9), mode=mode, align_corners=align_corners)
    gpu = crop_affine(x.cuda(), boxes.cuda(), (7, 9), mode=mode, align_corners=align_corners)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    # gradients with respect to the boxes agree too
    if mode != "nearest":
        grads = []
        for device in ("cpu", "cuda"):
            b = boxes.to(device).requires_grad_(True)
            crop_affine(x.to(device), b, (7, 9), mode=mode, align_corners=align_corners).square().sum().backward()
            grads.append(b.grad.cpu())
        torch.testing.assert_close(grads[1], grads[0], atol=1e-3, rtol=1e-4)
