"""The box rules against plain per-sample loops written from their docstrings, argument errors of every
validated argument of ``fgzoom.ops.boxes``, and the package's exports."""

from __future__ import annotations

import math

import pytest
import torch

import fgzoom.ops as ops
from fgzoom.ops import (
    box_mask,
    glimpse_boxes,
    grow_boxes,
    mass_extent,
    matched_box_iou,
    moments_extent,
    normalize_attention,
    region_boxes,
    resize_attention,
    round_boxes,
    rule_boxes,
    scale_boxes,
    scale_float_boxes,
    threshold_boxes,
    threshold_extent,
)

B, H, W = 6, 7, 9


# ------------------------------------------------------------------------------ references (one sample)
def ref_normalize(m):
    """(norm as a list of rows, degenerate): (a - min) / (max - min), all ones for a flat or non-finite map."""
    values = [v for row in m for v in row]
    if not all(math.isfinite(v) for v in values) or max(values) - min(values) <= 1e-12:
        return [[1.0] * len(row) for row in m], True
    lo, hi = min(values), max(values)
    return [[(v - lo) / (hi - lo) for v in row] for row in m], False


def ref_threshold_extent(norm, threshold):
    cells = [(i, j) for i, row in enumerate(norm) for j, v in enumerate(row) if v >= min(threshold, 1.0)]
    rows, cols = [i for i, _ in cells], [j for _, j in cells]
    return [min(rows), min(cols), max(rows) + 1, max(cols) + 1]


def ref_shortest_run(weights, mass):
    """The shortest [s, e) with sum(weights[s:e]) >= mass * total (up to 1e-6); most mass, then first."""
    total = sum(weights)
    for length in range(1, len(weights) + 1):
        runs = [(sum(weights[s : s + length]) / total, s) for s in range(len(weights) - length + 1)]
        held = [(m, s) for m, s in runs if m >= mass - 1e-6]
        if held:
            best = max(m for m, _ in held)
            s = min(s for m, s in held if m == best)
            return s, s + length
    raise AssertionError("mass above 1")


def ref_mass_extent(norm, mass):
    y0, y1 = ref_shortest_run([sum(row) for row in norm], mass)
    x0, x1 = ref_shortest_run([sum(col) for col in zip(*norm, strict=True)], mass)
    return [y0, x0, y1, x1]


def ref_moments_extent(norm, sigmas, threshold):
    weights = [[max(v - threshold, 0.0) for v in row] for row in norm]
    total = sum(map(sum, weights))
    py = [sum(row) / total for row in weights]
    px = [sum(col) / total for col in zip(*weights, strict=True)]

    def centre_and_std(p):
        c = sum(pi * (i + 0.5) for i, pi in enumerate(p))
        return c, math.sqrt(sum(pi * (i + 0.5 - c) ** 2 for i, pi in enumerate(p)) + 1 / 12)

    (cy, sy), (cx, sx) = centre_and_std(py), centre_and_std(px)
    return [cy - sigmas * sy, cx - sigmas * sx, cy + sigmas * sy, cx + sigmas * sx]


def ref_grow_side(lo, hi, n, padding, min_size):
    def clip(v):
        return min(max(v, 0.0), float(n))

    side = hi - lo
    lo, hi = clip(lo - padding * side), clip(hi + padding * side)
    if min_size > 0:
        centre, half = (lo + hi) / 2, max(hi - lo, min_size * n) / 2
        lo, hi = centre - half, centre + half
        if lo < 0:  # shifted, not clipped
            lo, hi = 0.0, hi - lo
        elif hi > n:
            lo, hi = lo - (hi - n), float(n)
    return clip(lo), clip(hi)


def ref_grow(box, h, w, padding, min_size):
    y0, y1 = ref_grow_side(box[0], box[2], h, padding, min_size)
    x0, x1 = ref_grow_side(box[1], box[3], w, padding, min_size)
    return [y0, x0, y1, x1]


def ref_round(box, h, w):
    y0 = min(max(math.floor(box[0]), 0), h - 1)
    x0 = min(max(math.floor(box[1]), 0), w - 1)
    y1 = max(min(max(math.ceil(box[2]), 1), h), y0 + 1)
    x1 = max(min(max(math.ceil(box[3]), 1), w), x0 + 1)
    return [y0, x0, y1, x1]


def ref_rule(m, rule, threshold, mass, sigmas, padding, min_size):
    h, w = len(m), len(m[0])
    norm, degenerate = ref_normalize(m)
    if degenerate:
        return [0.0, 0.0, float(h), float(w)], True
    extent = {
        "threshold": lambda: ref_threshold_extent(norm, threshold),
        "mass": lambda: ref_mass_extent(norm, mass),
        "moments": lambda: ref_moments_extent(norm, sigmas, threshold),
    }[rule]()
    return ref_grow(extent, h, w, padding, min_size), False


def ref_regions(m, k, **options):
    norm, _ = ref_normalize(m)
    boxes, flags = [], []
    for _ in range(k):
        box, flag = ref_rule(norm, **options)
        boxes.append(box)
        flags.append(flag)
        y0, x0, y1, x1 = box
        norm = [[0.0 if y0 <= i + 0.5 < y1 and x0 <= j + 0.5 < x1 else v for j, v in enumerate(row)]
                for i, row in enumerate(norm)]
    return boxes, flags


# ------------------------------------------------------------------------------ inputs
def random_maps(seed):
    """Tensor[B, H, W]: random maps (some smooth, some noise) plus a flat and a non-finite one."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(B, H, W, generator=g)
    maps[1] = maps[1] ** 6  # peaky
    maps[2] = torch.nn.functional.avg_pool2d(maps[2][None], 3, 1, 1)[0]  # smooth
    maps[3] = 0.25  # flat: degenerate
    maps[4, 2, 3] = float("nan")  # non-finite: degenerate
    return maps


def as_lists(maps):
    return [m.double().tolist() for m in maps]


def f64(values):
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------------------ batched vs loop
@pytest.mark.parametrize("seed", [0, 1])
def test_normalize_attention_matches_the_loop(seed):
    maps = random_maps(seed)
    norm, degenerate = normalize_attention(maps)
    for i, m in enumerate(as_lists(maps)):
        ref, flag = ref_normalize(m)
        assert degenerate[i].item() == flag
        torch.testing.assert_close(norm[i].double(), f64(ref), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_extents_match_the_loop(seed):
    maps = random_maps(seed)
    norm, degenerate = normalize_attention(maps)
    thresholds = torch.tensor([0.0, 0.3, 0.55, 0.8, 0.95, 1.0])
    lists = [ref_normalize(m)[0] for m in as_lists(maps)]
    keep = ~degenerate
    for threshold in (0.0, 0.35, 0.7, 1.0, thresholds):  # a number, and one per sample
        got = threshold_extent(norm, threshold)
        for i in keep.nonzero()[:, 0].tolist():
            t = float(threshold[i]) if isinstance(threshold, torch.Tensor) else threshold
            assert got[i].tolist() == ref_threshold_extent(lists[i], t), (i, t)
    for mass in (0.05, 0.3, 0.5, 0.9, 1.0):
        got = mass_extent(norm, mass)
        for i in keep.nonzero()[:, 0].tolist():
            assert got[i].tolist() == ref_mass_extent(lists[i], mass), (i, mass)
    for sigmas, threshold in ((1.0, 0.0), (math.sqrt(3), 0.4), (2.5, 0.9)):
        got = moments_extent(norm, sigmas, threshold)
        expected = f64([ref_moments_extent(lists[i], sigmas, threshold) for i in range(B)])
        torch.testing.assert_close(got[keep].double(), expected[keep], atol=1e-4, rtol=0)


def random_float_boxes(n, seed):
    """Tensor[n, 4] float boxes, partly outside the frame, some narrower than a cell."""
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(n, 2, 2, generator=g) * torch.tensor([H + 4.0, W + 4.0]) - 2.0
    lo, hi = corners.amin(dim=1), corners.amax(dim=1)
    hi[::3] = lo[::3] + 0.3  # narrower than one cell
    return torch.cat([lo, hi], dim=1)


@pytest.mark.parametrize(("padding", "min_size"), [(0.0, 0.0), (0.2, 0.0), (0.0, 0.45), (0.7, 0.3), (3.0, 1.0)])
def test_grow_boxes_matches_the_loop(padding, min_size):
    boxes = random_float_boxes(24, seed=5)
    got = grow_boxes(boxes, (H, W), padding, min_size)
    expected = torch.tensor([ref_grow(b, H, W, padding, min_size) for b in boxes.double().tolist()],
                            dtype=torch.float64)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_round_boxes_matches_the_loop():
    boxes = torch.cat([random_float_boxes(40, seed=6), torch.tensor([[2.0, 3.0, 5.0, 7.0], [7.0, 9.0, 7.0, 9.0]])])
    got = round_boxes(boxes, (H, W))
    assert got.dtype == torch.int64
    assert got.tolist() == [ref_round(b, H, W) for b in boxes.tolist()]


RULE_CASES = [
    dict(rule="threshold", threshold=0.6, padding=0.13, min_size=0.37),
    dict(rule="mass", mass=0.4, padding=0.0, min_size=0.0),
    dict(rule="mass", mass=0.8, padding=0.13, min_size=0.0),
    dict(rule="moments", threshold=0.5, sigmas=1.5, padding=0.0, min_size=0.37),
]


@pytest.mark.parametrize("options", RULE_CASES, ids=lambda o: o["rule"])
def test_rule_and_region_boxes_match_the_loop(options):
    options = {"threshold": 0.5, "mass": 0.5, "sigmas": 1.5, **options}
    maps = random_maps(seed=7)
    boxes, degenerate = rule_boxes(maps, **options)
    expected = [ref_rule(m, **options) for m in as_lists(maps)]
    assert degenerate.tolist() == [flag for _, flag in expected]
    torch.testing.assert_close(boxes.double(), f64([b for b, _ in expected]), atol=1e-4, rtol=0)

    if options["rule"] == "threshold":  # threshold_boxes: that rule rounded outward
        cells, _ = threshold_boxes(maps, options["threshold"], options["padding"], options["min_size"])
        assert cells.tolist() == [ref_round(b, H, W) for b, _ in expected]

    regions, flags = region_boxes(maps, 3, **options)
    assert regions.shape == (B, 3, 4) and flags.shape == (B, 3)
    for i, m in enumerate(as_lists(maps)):
        ref_boxes, ref_flags = ref_regions(m, 3, **options)
        assert flags[i].tolist() == ref_flags, i
        torch.testing.assert_close(regions[i].double(), f64(ref_boxes), atol=1e-4, rtol=0, msg=str(i))


def test_glimpse_iou_mask_and_scaling_match_the_loop():
    maps = random_maps(seed=8)
    boxes, degenerate = glimpse_boxes(maps, (3, 4))
    for i, m in enumerate(as_lists(maps)):
        norm, flag = ref_normalize(m)
        flat = [v for row in norm for v in row]
        peak = flat.index(max(flat)) if not flag else (H // 2) * W + W // 2
        y0 = min(max(peak // W - 1, 0), H - 3)
        x0 = min(max(peak % W - 2, 0), W - 4)
        assert boxes[i].tolist() == [y0, x0, y0 + 3, x0 + 4] and degenerate[i].item() == flag

    a, b = random_float_boxes(12, seed=9), random_float_boxes(12, seed=10)
    for (ay0, ax0, ay1, ax1), (by0, bx0, by1, bx1), iou in zip(a.double().tolist(), b.double().tolist(),
                                                              matched_box_iou(a, b).tolist(), strict=True):
        inter = max(min(ay1, by1) - max(ay0, by0), 0) * max(min(ax1, bx1) - max(ax0, bx0), 0)
        union = max(ay1 - ay0, 0) * max(ax1 - ax0, 0) + max(by1 - by0, 0) * max(bx1 - bx0, 0) - inter
        assert iou == pytest.approx(inter / union if union > 0 else 0.0, abs=1e-6)

    mask = box_mask(a, (H, W))
    for n, (y0, x0, y1, x1) in enumerate(a.tolist()):
        expected = [[y0 <= i + 0.5 < y1 and x0 <= j + 0.5 < x1 for j in range(W)] for i in range(H)]
        assert mask[n].tolist() == expected

    up = scale_float_boxes(a, (H, W), (2 * H, 3 * W))
    torch.testing.assert_close(up, a * torch.tensor([2.0, 3.0, 2.0, 3.0]))


def test_valid_calls_read_no_tensor_value(monkeypatch):
    """The argument checks look at Python numbers and shapes only: no host read (a device sync on CUDA)."""
    maps, thresholds = random_maps(seed=11), torch.full((B,), 0.5)
    int_boxes = torch.tensor([[0, 0, 3, 4]] * B)

    def forbidden(*args, **kwargs):
        raise AssertionError("a box function read a tensor value back to the host")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
            m.setattr(torch.Tensor, name, forbidden)
        for rule in ("threshold", "mass", "moments"):
            region_boxes(maps, 2, rule, threshold=thresholds, padding=0.1, min_size=0.2)
        threshold_boxes(maps, thresholds, padding=0.1, min_size=0.2)
        glimpse_boxes(resize_attention(maps, (14, 18)), (3, 3))
        scale_boxes(int_boxes, (H, W), (70, 90))
        matched_box_iou(int_boxes, int_boxes)


# ------------------------------------------------------------------------------ argument errors
MAPS = torch.rand(2, 5, 6)
FBOXES = torch.tensor([[0.5, 1.0, 3.0, 4.5], [1.0, 1.0, 2.0, 2.0]])
IBOXES = FBOXES.long()

ERRORS = [
    # (function, args, kwargs, message start)
    (normalize_attention, (torch.rand(5, 6),), {}, "attention=Tensor[5, 6] torch.float32: must be a Tensor[B, h, w]"),
    (normalize_attention, (torch.ones(2, 5, 6, dtype=torch.int64),), {}, "attention=Tensor[2, 5, 6] torch.int64: "
     "must have a floating dtype"),
    (normalize_attention, (torch.rand(2, 0, 6),), {}, "attention=Tensor[2, 0, 6]"),
    (normalize_attention, (MAPS.numpy(),), {}, "attention=array("),
    (resize_attention, (MAPS, (0, 4)), {}, "grid=(0, 4): must be a pair (h, w) of ints >= 1"),
    (resize_attention, (MAPS, (4.0, 4)), {}, "grid=(4.0, 4): must be a pair"),
    (resize_attention, (MAPS, 8), {}, "grid=8: must be a pair"),
    (threshold_boxes, (MAPS, 0.5), {"padding": -3, "min_size": 7}, "padding=-3: must be a number >= 0"),
    (threshold_boxes, (MAPS, 0.5), {"min_size": 7}, "min_size=7: must be a number in [0, 1]"),
    (threshold_boxes, (MAPS, 0.5), {"min_size": -0.1}, "min_size=-0.1: must be a number in [0, 1]"),
    (threshold_boxes, (MAPS, 0.5), {"padding": float("nan")}, "padding=nan: must be a number >= 0"),
    (threshold_boxes, (MAPS, 0.5), {"padding": math.inf}, "padding=inf: must be a number >= 0"),
    (threshold_boxes, (MAPS, 0.5), {"padding": torch.tensor(0.1)}, "padding=tensor(0.1000): must be a number"),
    (threshold_boxes, (MAPS, 1.5), {}, "threshold=1.5: must be a number in [0, 1] or a Tensor[B]"),
    (threshold_boxes, (MAPS, -0.1), {}, "threshold=-0.1: must be a number in [0, 1]"),
    (threshold_boxes, (MAPS, "0.5"), {}, "threshold='0.5': must be a number"),
    (threshold_boxes, (MAPS, torch.rand(3)), {}, "threshold=Tensor[3] torch.float32: a threshold tensor must be a "
     "floating Tensor[B] (B=2)"),
    (threshold_boxes, (MAPS, torch.ones(2, dtype=torch.int64)), {}, "threshold=Tensor[2] torch.int64: a threshold"),
    (glimpse_boxes, (MAPS, (6, 2)), {}, "size=(6, 2): a glimpse must fit the 5x6 grid"),
    (glimpse_boxes, (MAPS, (0, 2)), {}, "size=(0, 2): must be a pair (h, w) of ints >= 1"),
    (glimpse_boxes, (MAPS, (2.0, 2)), {}, "size=(2.0, 2): must be a pair"),
    (grow_boxes, (FBOXES[0], (5, 6), 0.0, 0.0), {}, "boxes=Tensor[4] torch.float32: must be a Tensor[N, 4]"),
    (grow_boxes, (FBOXES, (5, -6), 0.0, 0.0), {}, "grid=(5, -6): must be a pair"),
    (grow_boxes, (FBOXES, (5, 6), -0.5, 0.0), {}, "padding=-0.5: must be a number >= 0"),
    (grow_boxes, (FBOXES, (5, 6), 0.0, 1.5), {}, "min_size=1.5: must be a number in [0, 1]"),
    (round_boxes, (FBOXES[:, :3], (5, 6)), {}, "boxes=Tensor[2, 3] torch.float32: must be a Tensor[N, 4]"),
    (round_boxes, (FBOXES > 1, (5, 6)), {}, "boxes=Tensor[2, 4] torch.bool: must have a real"),
    (round_boxes, (FBOXES, (5, 6, 1)), {}, "grid=(5, 6, 1): must be a pair"),
    (scale_boxes, (FBOXES, (5, 6), (10, 12)), {}, "boxes=Tensor[2, 4] torch.float32: must have an integer dtype"),
    (scale_boxes, (IBOXES, (5, 0), (10, 12)), {}, "src=(5, 0): must be a pair"),
    (scale_boxes, (IBOXES, (5, 6), None), {}, "dst=None: must be a pair"),
    (matched_box_iou, (FBOXES, FBOXES[:1]), {}, "b of shape (1, 4): must match a of shape (2, 4)"),
    (matched_box_iou, ([[0, 0, 1, 1]], FBOXES), {}, "a=[[0, 0, 1, 1]]: must be a Tensor[N, 4]"),
    (threshold_extent, (MAPS[0], 0.5), {}, "norm=Tensor[5, 6] torch.float32: must be a Tensor[B, h, w]"),
    (threshold_extent, (MAPS, 2), {}, "threshold=2: must be a number in [0, 1]"),
    (mass_extent, (MAPS, 0.0), {}, "mass=0.0: must be a number in (0, 1]"),
    (mass_extent, (MAPS, 1.5), {}, "mass=1.5: must be a number in (0, 1]"),
    (moments_extent, (MAPS, 0.0), {}, "sigmas=0.0: must be a number > 0"),
    (moments_extent, (MAPS, -1), {}, "sigmas=-1: must be a number > 0"),
    (moments_extent, (MAPS, 1.5, 1.0), {}, "threshold=1.0: must be a number in [0, 1) or a Tensor[B]"),
    (rule_boxes, (MAPS, "peak"), {}, "rule='peak': box rule must be one of ('threshold', 'mass', 'moments')"),
    (rule_boxes, (MAPS, "moments"), {"threshold": 1.0}, "threshold=1.0: must be a number in [0, 1)"),
    (rule_boxes, (MAPS, "threshold"), {"mass": 0}, "mass=0: must be a number in (0, 1]"),
    (rule_boxes, (MAPS, "mass"), {"sigmas": math.nan}, "sigmas=nan: must be a number > 0"),
    (rule_boxes, (MAPS, "mass"), {"padding": True}, "padding=True: must be a number >= 0"),
    (box_mask, (FBOXES[:, :2], (5, 6)), {}, "boxes=Tensor[2, 2] torch.float32: must be a Tensor[N, 4]"),
    (box_mask, (FBOXES, [5]), {}, "grid=[5]: must be a pair"),
    (region_boxes, (MAPS, 0, "threshold"), {}, "num_regions=0: must be an int >= 1"),
    (region_boxes, (MAPS, 2.0, "threshold"), {}, "num_regions=2.0: must be an int >= 1"),
    (region_boxes, (MAPS, True, "threshold"), {}, "num_regions=True: must be an int >= 1"),
    (region_boxes, (MAPS, 2, "peak"), {}, "rule='peak': box rule must be one of"),
    (region_boxes, (MAPS, 2, "mass"), {"mass": 2.0}, "mass=2.0: must be a number in (0, 1]"),
    (scale_float_boxes, (FBOXES[:, :3], (5, 6), (10, 12)), {}, "boxes=Tensor[2, 3] torch.float32: must be a "
     "Tensor[..., 4]"),
    (scale_float_boxes, (FBOXES, (5, 6), (10, 0)), {}, "dst=(10, 0): must be a pair"),
]


@pytest.mark.parametrize(("fn", "args", "kwargs", "message"), ERRORS,
                         ids=[f"{e[0].__name__}-{i}" for i, e in enumerate(ERRORS)])
def test_argument_errors_name_the_argument_its_value_and_the_range(fn, args, kwargs, message):
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    assert str(info.value).startswith(message), str(info.value)


def test_package_exports():
    assert len(ops.__all__) == len(set(ops.__all__))
    for name in ops.__all__:
        assert getattr(ops, name) is not None, name
    for name in ("crop_resize", "crop_affine", "check_interpolation", "threshold_boxes", "glimpse_boxes",
                 "region_boxes", "round_boxes", "matched_box_iou", "scale_boxes"):
        assert callable(getattr(ops, name)) and name in ops.__all__
