"""Boxes from attention maps: threshold, glimpse, padding, degenerate maps, grid scaling, IoU, and boxes
mapped back through a transform (boxes_to_source)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from fgzoom.ops.attention_boxes import glimpse_boxes, threshold_boxes
from fgzoom.ops.boxes import boxes_to_source, matched_box_iou, scale_boxes


def _peaked(h=8, w=8, at=(2, 5)):
    a = torch.zeros(1, h, w)
    a[0, at[0], at[1]] = 1.0
    return a


def test_threshold_box_is_the_region_above_theta():
    a = torch.zeros(1, 8, 8)
    a[0, 2:4, 3:7] = 1.0
    a[0, 5, 5] = 0.3
    boxes, degenerate = threshold_boxes(a, 0.5)
    assert boxes.tolist() == [[2, 3, 4, 7]] and not degenerate.any()
    boxes, _ = threshold_boxes(a, 0.2)
    assert boxes.tolist() == [[2, 3, 6, 7]]


def test_per_sample_threshold_and_batch_without_loop():
    a = torch.stack([torch.linspace(0, 1, 8).repeat(8, 1)] * 2)  # increases along x
    boxes, _ = threshold_boxes(a, torch.tensor([0.5, 0.9]))
    assert boxes[:, 1].tolist() == [4, 7]
    assert boxes[:, 3].tolist() == [8, 8]


def test_padding_and_min_size_stay_inside_the_frame():
    boxes, _ = threshold_boxes(_peaked(at=(0, 7)), 0.5, padding=1.0, min_size=0.5)
    y0, x0, y1, x1 = boxes[0].tolist()
    assert (y1 - y0, x1 - x0) == (4, 4)
    assert 0 <= y0 and x1 <= 8


def test_degenerate_maps_fall_back_to_the_whole_frame():
    maps = torch.stack([torch.zeros(6, 6), torch.full((6, 6), 3.0), torch.full((6, 6), float("nan")), _peaked(6, 6)[0]])
    boxes, degenerate = threshold_boxes(maps, 0.5)
    assert degenerate.tolist() == [True, True, True, False]
    assert boxes[:3].tolist() == [[0, 0, 6, 6]] * 3


def test_glimpse_boxes_have_one_size_and_follow_the_peak():
    maps = torch.cat([_peaked(at=(0, 0)), _peaked(at=(4, 4)), _peaked(at=(7, 7))])
    boxes, _ = glimpse_boxes(maps, (4, 4))
    assert boxes.tolist() == [[0, 0, 4, 4], [2, 2, 6, 6], [4, 4, 8, 8]]


def test_scale_boxes_covers_the_same_region():
    assert scale_boxes(torch.tensor([[1, 2, 3, 4]]), (6, 6), (96, 96)).tolist() == [[16, 32, 48, 64]]
    assert scale_boxes(torch.tensor([[0, 0, 1, 1]]), (3, 3), (10, 10)).tolist() == [[0, 0, 4, 4]]


def expected_scaled(box, src, dst):
    """The reference in exact rational arithmetic, one box at a time."""
    y0, x0, y1, x1 = box
    (h, w), (H, W) = src, dst
    fy0, fx0 = math.floor(Fraction(y0 * H, h)), math.floor(Fraction(x0 * W, w))
    fy1, fx1 = min(math.ceil(Fraction(y1 * H, h)), H), min(math.ceil(Fraction(x1 * W, w)), W)
    return [fy0, fx0, max(fy1, fy0 + 1), max(fx1, fx0 + 1)]


@pytest.mark.parametrize(("src", "dst"), [((7, 7), (100, 100)), ((14, 10), (448, 320)), ((6, 9), (95, 61))])
def test_scale_boxes_is_exact_for_any_grid_ratio(src, dst):
    g = torch.Generator().manual_seed(0)
    ys = torch.randint(0, src[0] + 1, (64, 2), generator=g).sort(dim=1).values
    xs = torch.randint(0, src[1] + 1, (64, 2), generator=g).sort(dim=1).values
    boxes = torch.stack([ys[:, 0], xs[:, 0], ys[:, 1] + 1, xs[:, 1] + 1], dim=1).clamp(max=torch.tensor([*src, *src]))
    got = scale_boxes(boxes, src, dst)
    assert got.dtype == torch.int64
    assert got.tolist() == [expected_scaled(b, src, dst) for b in boxes.tolist()]


def test_threshold_as_number_or_tensor_gives_the_same_boxes():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(5, 7, 9, generator=g)
    for theta in (0.0, 0.3, 0.55, 0.99):
        number, _ = threshold_boxes(maps, theta, padding=0.1, min_size=0.2)
        tensor, _ = threshold_boxes(maps, torch.full((5,), theta), padding=0.1, min_size=0.2)
        assert torch.equal(number, tensor) and number.dtype == torch.int64


def test_box_iou_known_answers():
    a = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 5]])
    assert matched_box_iou(a, b).tolist() == [1.0, 0.0, 0.5]


def expected_to_source(box, frame, size):
    """The reference, one box at a time: invert each axis, swap flipped edges, clamp to the source."""
    sy, ty, sx, tx = frame
    y0, y1 = sorted(((box[0] - ty) / sy, (box[2] - ty) / sy))
    x0, x1 = sorted(((box[1] - tx) / sx, (box[3] - tx) / sx))
    h, w = size
    return [min(max(y0, 0), h), min(max(x0, 0), w), min(max(y1, 0), h), min(max(x1, 0), w)]


@pytest.mark.parametrize("dtype", [torch.int64, torch.float32, torch.float64])
@pytest.mark.parametrize("regions", [None, 3])
def test_boxes_to_source_inverts_each_samples_frame(dtype, regions):
    """Resize + centre crop, a flip, identity, a zoom past the edges: the loop's answer for [N, 4] and
    [N, k, 4]."""
    frames = torch.tensor([[48 / 375, -3.0, 48 / 500, -10.5], [0.5, 0.0, -0.5, 24.0], [1.0, 0.0, 1.0, 0.0],
                           [2.0, 4.0, 2.0, -8.0]], dtype=torch.float64)
    sizes = torch.tensor([[375, 500], [96, 96], [48, 48], [20, 30]])
    g = torch.Generator().manual_seed(1)
    n = 4 * (regions or 1)
    ys = (torch.rand(n, 2, generator=g) * 48).sort(dim=1).values
    xs = (torch.rand(n, 2, generator=g) * 48).sort(dim=1).values
    boxes = torch.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], dim=1).reshape(4, -1, 4)
    boxes[3, 0] = torch.tensor([0.0, 0.0, 48.0, 48.0])  # the whole transformed image: past the last source
    boxes = boxes.to(dtype) if regions else boxes[:, 0].to(dtype)
    got = boxes_to_source(boxes, frames, sizes)
    assert got.dtype == torch.float32 and got.shape == boxes.shape
    rows = boxes.reshape(4, -1, 4)
    expected = [[expected_to_source(b, frames[i].tolist(), sizes[i].tolist()) for b in rows[i].double().tolist()]
                for i in range(4)]
    torch.testing.assert_close(got.reshape(4, -1, 4), torch.tensor(expected, dtype=torch.float32), rtol=0, atol=1e-4)
    assert (got[..., 2:] >= got[..., :2]).all()  # the flipped sample's edges swapped back
    assert got.reshape(4, -1, 4)[3, 0].tolist() == [0.0, 4.0, 20.0, 28.0]  # clamped to the 20 x 30 source
    assert boxes_to_source(boxes, frames).reshape(4, -1, 4)[3, 0].tolist() == [-2.0, 4.0, 22.0, 28.0]


def test_boxes_to_source_errors():
    boxes = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"boxes=Tensor\[4\] torch.float32: must be a Tensor\[N, ..., 4\]"):
        boxes_to_source(torch.zeros(4), torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"frames=Tensor\[3, 4\] torch.float32: must be a floating Tensor\[2, 4\]"):
        boxes_to_source(boxes, torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"frames=Tensor\[2, 4\] torch.int64: must be a floating"):
        boxes_to_source(boxes, torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"sizes=Tensor\[2\] torch.int64: must be a Tensor\[2, 2\]"):
        boxes_to_source(boxes, torch.ones(2, 4), torch.ones(2, dtype=torch.int64))
