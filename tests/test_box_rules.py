"""The continuous box rules (threshold, mass, moments), growing/rounding, k regions, the new ZoomConfig
checks, and ZoomNet over samplers x box rules x regions x levels (learned boxes get gradients)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fgzoom.errors import ConfigError
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.module import FGVCModule
from fgzoom.models.options import config_from
from fgzoom.models.zoom import ZoomNet
from fgzoom.models.zoom_config import ZoomConfig
from fgzoom.ops.attention_boxes import (
    mass_extent,
    moments_extent,
    normalize_attention,
    region_boxes,
    rule_boxes,
    threshold_extent,
)
from fgzoom.ops.boxes import box_mask, grow_boxes, round_boxes, scale_float_boxes

H, W = 10, 12


def blob(y0, x0, y1, x1, value=1.0, h=H, w=W):
    """Tensor[1, h, w]: ``value`` on the cells [y0:y1, x0:x1], zero elsewhere."""
    m = torch.zeros(1, h, w)
    m[0, y0:y1, x0:x1] = value
    return m


def box(*values):
    return torch.tensor([list(values)], dtype=torch.float32)


# ------------------------------------------------------------------------------------------- each rule
def test_threshold_gives_the_exact_extent_of_a_uniform_blob():
    boxes, degenerate = rule_boxes(blob(2, 3, 6, 8), "threshold", threshold=0.5)
    assert boxes.dtype == torch.float32 and not degenerate.any()
    torch.testing.assert_close(boxes, box(2, 3, 6, 8))


def test_threshold_extent_of_a_stepped_map_follows_the_threshold():
    m = blob(1, 1, 9, 11, 0.4) + blob(4, 5, 6, 7, 0.6)  # 0.4 plateau, 1.0 core
    norm, _ = normalize_attention(m)
    torch.testing.assert_close(threshold_extent(norm, 0.3), box(1, 1, 9, 11))
    torch.testing.assert_close(threshold_extent(norm, 0.5), box(4, 5, 6, 7))


def test_threshold_per_sample_tensor():
    m = (blob(1, 1, 9, 11, 0.4) + blob(4, 5, 6, 7, 0.6)).expand(3, H, W)
    boxes, _ = rule_boxes(m, "threshold", threshold=torch.tensor([0.3, 0.9, 0.0]))
    torch.testing.assert_close(boxes, torch.tensor([[1.0, 1, 9, 11], [4, 5, 6, 7], [0, 0, H, W]]))


def test_mass_one_gives_the_support():
    boxes, _ = rule_boxes(blob(2, 3, 6, 8), "mass", mass=1.0)
    torch.testing.assert_close(boxes, box(2, 3, 6, 8))
    # a non-uniform support too
    m = blob(2, 3, 6, 8) * torch.rand(1, H, W, generator=torch.Generator().manual_seed(0)).add(0.1)
    torch.testing.assert_close(rule_boxes(m, "mass", mass=1.0)[0], box(2, 3, 6, 8))


def test_mass_small_gives_the_peak_cell_of_a_sharp_peak():
    m = blob(0, 0, H, W, 0.05) + blob(6, 8, 7, 9, 0.95)  # one hot cell over a low plateau
    m[0, 0, 0] = 0.0  # so the plateau is not the minimum
    boxes, _ = rule_boxes(m, "mass", mass=0.1)
    torch.testing.assert_close(boxes, box(6, 8, 7, 9))


def test_mass_runs_grow_with_mass_and_always_hold_it():
    v = torch.exp(-((torch.arange(32.0) - 20.3) ** 2) / 30)
    m = (v[:, None] * v[None, :])[None]  # separable Gaussian, peak at (20, 20)
    norm, _ = normalize_attention(m)
    weights = norm.sum(dim=2)[0]
    last = 0.0
    for mass in (0.05, 0.2, 0.5, 0.8, 0.95, 1.0):
        y0, x0, y1, x1 = mass_extent(norm, mass)[0].tolist()
        assert y1 - y0 >= last and (y0, y1) == (x0, x1)
        last = y1 - y0
        assert weights[int(y0) : int(y1)].sum() >= mass * weights.sum() - 1e-4
        # shortest: dropping either end cell loses mass below the target
        assert weights[int(y0) + 1 : int(y1)].sum() < mass * weights.sum()
        assert weights[int(y0) : int(y1) - 1].sum() < mass * weights.sum()


@pytest.mark.parametrize("case", ["profile-1-2-3-2-1", "gaussian"])
def test_mass_small_gives_a_short_run_around_the_peak(case):
    if case == "gaussian":  # peak at cell (4, 6); mass 0.3 returns rows [2, 4), cols [4, 6): the peak is outside
        ys, xs = torch.arange(8.0)[:, None], torch.arange(10.0)[None, :]
        m, mass, peak = torch.exp(-((ys - 4) ** 2 + (xs - 6) ** 2) / 4)[None], 0.3, (4, 6)
    else:  # peak at cell (2, 2); mass 0.2 returns cell (1, 1)
        v = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0])
        m, mass, peak = (v[:, None] * v[None, :])[None], 0.2, (2, 2)
    boxes, _ = rule_boxes(m, "mass", mass=mass)
    y0, x0, y1, x1 = boxes[0].tolist()
    assert y0 <= peak[0] < y1 and x0 <= peak[1] < x1


def test_moments_of_a_uniform_blob_with_sqrt3_sigmas_is_exactly_the_blob():
    boxes, _ = rule_boxes(blob(2, 3, 6, 9), "moments", sigmas=math.sqrt(3), threshold=0.0)
    torch.testing.assert_close(boxes, box(2, 3, 6, 9), atol=1e-4, rtol=0)


def test_moments_centre_and_spread():
    # two single cells in a row: centre between them; std along x sqrt(2^2 + 1/12), along y sqrt(1/12)
    # (each cell is a unit square)
    m = blob(3, 4, 4, 5) + blob(3, 8, 4, 9)
    sy, sx = math.sqrt(1 / 12), math.sqrt(4 + 1 / 12)
    torch.testing.assert_close(moments_extent(normalize_attention(m)[0], 1.0), box(3.5 - sy, 6.5 - sx, 3.5 + sy, 6.5 + sx))


# ------------------------------------------------------------------------------ padding, min_size, grow
def test_padding_grows_each_side_by_a_fraction_of_the_box_and_clips_to_the_frame():
    boxes, _ = rule_boxes(blob(4, 4, 6, 8), "threshold", padding=0.5)
    torch.testing.assert_close(boxes, box(3, 2, 7, 10))
    boxes, _ = rule_boxes(blob(0, 0, 2, 2), "threshold", padding=1.0)
    torch.testing.assert_close(boxes, box(0, 0, 4, 4))


@pytest.mark.parametrize("corner", [(0, 0), (H - 1, W - 1), (0, W - 1)])
@pytest.mark.parametrize("rule", ["threshold", "mass", "moments"])
def test_min_size_grows_a_small_box_inside_the_frame(corner, rule):
    y, x = corner
    boxes, _ = rule_boxes(blob(y, x, y + 1, x + 1), rule, min_size=0.5, mass=1.0)
    y0, x0, y1, x1 = boxes[0].tolist()
    assert 0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W
    assert y1 - y0 == pytest.approx(0.5 * H) and x1 - x0 == pytest.approx(0.5 * W)  # shifted, not clipped
    assert y0 <= y + 0.5 <= y1 and x0 <= x + 0.5 <= x1  # still holds the blob's centre


def test_grow_boxes_keeps_large_boxes_and_ends_inside_the_frame():
    boxes = torch.tensor([[1.0, 2.0, 9.0, 11.0], [-3.0, -1.0, 4.0, 15.0], [4.2, 5.1, 4.3, 5.3]])
    for min_size in (0.0, 0.3):
        grown = grow_boxes(boxes, (H, W), padding=0.0, min_size=min_size)
        torch.testing.assert_close(grown[0], boxes[0])  # inside and large enough: unchanged
        assert (grown[:, :2] >= 0).all() and (grown[:, 2] <= H).all() and (grown[:, 3] <= W).all()
    torch.testing.assert_close(grow_boxes(boxes, (H, W), 0.0, 0.0)[1], torch.tensor([0.0, 0.0, 4.0, 12.0]))
    small = grow_boxes(boxes, (H, W), 0.0, 0.3)[2]  # grown about its centre to 3 x 3.6 cells
    torch.testing.assert_close(small, torch.tensor([4.25 - 1.5, 5.2 - 1.8, 4.25 + 1.5, 5.2 + 1.8]))


# ------------------------------------------------------------------------------------------ degenerate
@pytest.mark.parametrize("rule", ["threshold", "mass", "moments"])
def test_degenerate_maps_give_the_whole_frame(rule):
    maps = torch.stack([torch.zeros(H, W), torch.full((H, W), 3.0), blob(2, 3, 6, 8)[0], blob(2, 3, 6, 8)[0]])
    maps[3, 0, 0] = float("nan")
    maps[2, 0, 1] = float("inf")
    boxes, degenerate = rule_boxes(maps, rule, padding=0.2, min_size=0.3)
    assert degenerate.tolist() == [True, True, True, True]
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0.0, H, W]] * 4))


def test_unknown_rule_raises():
    with pytest.raises(ValueError, match=r"^rule='peak': box rule must be one of \('threshold', 'mass', 'moments'\)"):
        rule_boxes(blob(2, 3, 6, 8), "peak")


# ----------------------------------------------------------------------------------- round / mask / scale
def test_round_boxes_rounds_outward_inside_the_grid():
    boxes = torch.tensor([
        [1.2, 0.7, 3.1, 4.0],  # ordinary: outward
        [2.0, 3.0, 5.0, 7.0],  # integer: unchanged
        [-0.5, 9.8, 0.1, 12.5],  # outside the frame: clipped
        [4.3, 5.5, 4.4, 5.6],  # narrower than a cell: that cell
        [10.0, 12.0, 10.0, 12.0],  # empty, on the far corner: the last cell
        [0.0, 0.0, 0.0, 0.0],  # empty, at the origin: the first cell
    ])
    got = round_boxes(boxes, (H, W))
    assert got.dtype == torch.int64
    assert got.tolist() == [[1, 0, 4, 4], [2, 3, 5, 7], [0, 9, 1, 12], [4, 5, 5, 6], [9, 11, 10, 12], [0, 0, 1, 1]]
    y0, x0, y1, x1 = got.unbind(1)
    assert ((0 <= y0) & (y0 < y1) & (y1 <= H) & (0 <= x0) & (x0 < x1) & (x1 <= W)).all()


def test_round_boxes_contains_random_boxes():
    g = torch.Generator().manual_seed(0)
    corners = torch.rand(200, 2, 2, generator=g) * torch.tensor([H, W])
    lo, hi = corners.amin(dim=1), corners.amax(dim=1)
    boxes = torch.cat([lo, hi], dim=1)  # (y0, x0, y1, x1)
    got = round_boxes(boxes, (H, W)).float()
    assert (got[:, :2] <= boxes[:, :2]).all() and (got[:, 2:] >= boxes[:, 2:]).all()
    assert (got[:, 2:] - got[:, :2] >= 1).all()
    assert (got[:, 2:] - got[:, :2] - (boxes[:, 2:] - boxes[:, :2]) < 2 + 1e-6).all()  # at most one cell per side


def test_box_mask_marks_the_cells_whose_centre_is_inside():
    mask = box_mask(torch.tensor([[1.4, 2.6, 3.5, 5.5]]), (H, W))[0]
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[1:3, 3:5] = True  # row 3 centre 3.5 is not < 3.5; col 5 centre 5.5 not < 5.5
    assert torch.equal(mask, expected)


def test_scale_float_boxes_round_trip():
    boxes = torch.tensor([[[1.25, 0.5, 7.75, 11.0], [0.0, 0.0, 10.0, 12.0]]])  # [1, k, 4]
    up = scale_float_boxes(boxes, (H, W), (80, 48))
    torch.testing.assert_close(up, torch.tensor([[[10.0, 2.0, 62.0, 44.0], [0.0, 0.0, 80.0, 48.0]]]))
    torch.testing.assert_close(scale_float_boxes(up, (80, 48), (H, W)), boxes)


# ------------------------------------------------------------------------------------------ k regions
def two_blobs():
    return blob(1, 1, 3, 4, 1.0) + blob(5, 6, 9, 11, 0.8)  # A: stronger, smaller; B: weaker, larger


def test_two_regions_find_both_blobs_most_salient_first():
    boxes, degenerate = region_boxes(two_blobs(), 2, rule="threshold", threshold=0.9, padding=0.0, min_size=0.0)
    assert boxes.shape == (1, 2, 4) and degenerate.shape == (1, 2) and not degenerate.any()
    torch.testing.assert_close(boxes[0], torch.tensor([[1.0, 1, 3, 4], [5, 6, 9, 11]]))


def test_two_regions_mass_rule_separates_a_dominant_blob():
    m = blob(1, 1, 3, 4, 5.0) + blob(5, 6, 9, 11, 0.8)  # A holds 30 of 46 units of attention
    boxes, degenerate = region_boxes(m, 2, rule="mass", mass=0.6, padding=0.0, min_size=0.0)
    assert not degenerate.any()
    torch.testing.assert_close(boxes[0, 0], torch.tensor([1.0, 1, 3, 4]))  # A
    y0, x0, y1, x1 = boxes[0, 1].tolist()  # then a box inside B
    assert 5 <= y0 < y1 <= 9 and 6 <= x0 < x1 <= 11


def test_two_regions_threshold_batched_and_non_overlapping():
    maps = torch.cat([two_blobs(), two_blobs().flip(1).flip(2)])  # second sample: blobs mirrored
    boxes, degenerate = region_boxes(maps, 2, rule="threshold", threshold=0.9, padding=0.0, min_size=0.0)
    assert not degenerate.any()
    torch.testing.assert_close(boxes[0], torch.tensor([[1.0, 1, 3, 4], [5, 6, 9, 11]]))
    torch.testing.assert_close(boxes[1], torch.tensor([[H - 3.0, W - 4, H - 1, W - 1], [1, 1, 5, 6]]))
    for b in boxes:
        overlap = box_mask(b[:1], (H, W)) & box_mask(b[1:], (H, W))
        assert not overlap.any()


def test_two_regions_when_one_threshold_box_holds_everything():
    # threshold 0.5 keeps both blobs (0.8 >= 0.5): one box over both, then an empty map -> the whole frame
    boxes, degenerate = region_boxes(two_blobs(), 2, rule="threshold", threshold=0.5, padding=0.0, min_size=0.0)
    torch.testing.assert_close(boxes[0], torch.tensor([[1.0, 1, 9, 11], [0, 0, H, W]]))
    assert degenerate[0].tolist() == [False, True]


# ------------------------------------------------------------------------------------ ZoomConfig checks
@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"sampler": "affine", "mode": "area"}, "mode"),
        ({"sampler": "affine", "mode": "bilinear", "antialias": True}, "antialias"),
        ({"box": "learned", "sampler": "slice"}, "box"),
        ({"box": "learned", "sampler": "affine", "mode": "nearest"}, "box"),
        ({"sampler": "grid_sample", "mode": "lanczos", "antialias": True}, "mode"),
        ({"box": "learned", "mode": "nearest-exact"}, "box"),  # the continuous sampler, a mode with no gradient
        ({"sampler": "wavelet"}, "sampler"),
        ({"scale_factor": 2.0, "box": "glimpse", "sampler": "grid_sample"}, "scale_factor"),
        ({"num_regions": 0}, "num_regions"),
        ({"box": "glimpse", "num_regions": 2}, "num_regions"),
        ({"box": "learned", "sampler": "affine", "num_regions": 9}, "num_regions"),
        ({"mass": 0.0}, "mass"),
        ({"mass": 1.5}, "mass"),
        ({"sigmas": 0.0}, "sigmas"),
        ({"rank_margin": -0.1}, "rank_margin"),
        ({"box": "learned", "sampler": "affine", "min_scale": 0.8, "max_scale": 0.2}, "min_scale"),
        ({"box": "learned", "sampler": "affine", "min_scale": 0.0}, "min_scale"),
        ({"box": "glimpse", "sampler": "affine", "scale_factor": 2.0}, "scale_factor"),
        ({"sampler": "grid"}, "sampler"),
    ],
)
def test_zoom_config_errors_name_the_key(change, key):
    with pytest.raises(ConfigError, match=rf"model\.zoom\.{key}="):
        dataclasses.replace(ZoomConfig(), **change)


def test_valid_new_combinations_are_accepted():
    ZoomConfig(sampler="affine", mode="bicubic", align_corners=True)
    ZoomConfig(sampler="affine", box="learned", num_regions=2)
    ZoomConfig(box="moments", num_regions=3, sigmas=2.0)
    ZoomConfig(box="mass", mass=1.0)
    config_from(ZoomConfig, {"sampler": "affine", "box": "mass", "num_regions": 2}, "model.zoom")


# ------------------------------------------------------------------------------------------- ZoomNet
SAMPLER_BOX = [(s, b) for s, b in itertools.product(["slice", "affine"], ["threshold", "mass", "moments", "learned"])
               if not (b == "learned" and s == "slice")]


def check_inside(boxes, grid):
    b = boxes.reshape(-1, 4).double()
    h, w = grid
    assert torch.isfinite(b).all()
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= h).all() and (b[:, 3] <= w).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


@pytest.mark.parametrize("level", ["feature", "image"])
@pytest.mark.parametrize("num_regions", [1, 2])
@pytest.mark.parametrize(("sampler", "box_rule"), SAMPLER_BOX, ids=lambda v: str(v))
def test_zoomnet_forward_every_sampler_box_regions_level(sampler, box_rule, num_regions, level):
    torch.manual_seed(0)
    zoom = ZoomConfig(level=level, sampler=sampler, box=box_rule, num_regions=num_regions, num_maps=4)
    net = ZoomNet(BackboneConfig("resnet10t"), zoom, num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    crop_grid = (4, 4) if level == "feature" else (64, 64)  # resnet10t stage -2: stride 16
    for training in (False, True):
        net.train(training)
        with torch.no_grad():
            out = net(x, return_zoomed=True)
        assert out["logits"].shape == out["logits_raw"].shape == out["logits_zoom"].shape == (2, 5)
        assert torch.isfinite(out["logits"]).all()
        shape = (2, 4) if num_regions == 1 else (2, num_regions, 4)
        assert out["boxes"].shape == out["boxes_image"].shape == shape
        assert out["degenerate"].shape == shape[:-1]
        assert out["boxes"].dtype == (torch.float32 if sampler == "affine" else torch.int64)
        check_inside(out["boxes"], crop_grid)
        check_inside(out["boxes_image"], (64, 64))
        assert out["zoomed"].shape[0] == 2 * num_regions and out["zoomed"].shape[-2:] == crop_grid
        if num_regions > 1:
            assert out["logits_views"].shape == (2, num_regions, 5)
        if box_rule == "learned":
            side = out["boxes_image"].reshape(-1, 4)
            frac = (side[:, 2:] - side[:, :2]) / 64
            assert (frac >= zoom.min_scale - 1e-5).all() and (frac <= zoom.max_scale + 1e-5).all()


@pytest.mark.parametrize("level", ["feature", "image"])
@pytest.mark.parametrize("num_regions", [1, 2])
def test_learned_boxes_get_gradients_from_the_training_loss(level, num_regions):
    torch.manual_seed(0)
    module = FGVCModule(
        backbone={"name": "resnet10t"}, num_classes=4,
        zoom={"level": level, "sampler": "affine", "box": "learned", "num_regions": num_regions, "num_maps": 4,
              "min_scale": 0.3, "max_scale": 0.7},
    )
    module.train()
    batch = {"image": torch.randn(4, 3, 64, 64), "label": torch.tensor([0, 1, 2, 3])}
    loss = module.criterion(module(batch["image"]), batch["label"])
    assert torch.isfinite(loss)
    loss.backward()
    head = module.net.learned_box
    assert head.scale.weight.grad is not None and head.scale.weight.grad.abs().sum() > 0
    assert head.scale.bias.grad.abs().sum() > 0
    assert head.log_temperature.grad is not None and head.log_temperature.grad.abs() > 0
    with torch.no_grad():
        out = module.net(batch["image"])
    side = out["boxes_image"].reshape(-1, 4)
    frac = (side[:, 2:] - side[:, :2]) / 64
    assert (frac >= 0.3 - 1e-5).all() and (frac <= 0.7 + 1e-5).all()
    check_inside(out["boxes_image"], (64, 64))


@pytest.mark.parametrize(("mode", "antialias"), [("bilinear", False), ("area", False), ("bicubic", True),
                                               ("lanczos", True)])
def test_learned_boxes_train_through_the_continuous_sampler_in_any_mode(mode, antialias):
    """The default sampler is differentiable in the box for every mode but nearest: the zoom branch's loss
    reaches the box head (side and centre temperature) at both levels."""
    for level in ("feature", "image"):
        torch.manual_seed(0)
        net = ZoomNet(BackboneConfig("resnet10t"), ZoomConfig(box="learned", level=level, mode=mode, antialias=antialias),
                      num_classes=3)
        assert net.config.sampler == "continuous"
        out = net(torch.randn(2, 3, 64, 64))
        F.cross_entropy(out["logits_zoom"], torch.tensor([0, 2])).backward()
        assert net.learned_box.scale.weight.grad.abs().sum() > 0, level
        assert net.learned_box.log_temperature.grad.abs() > 0, level


def test_learned_box_side_stays_in_range_for_extreme_scale_outputs():
    torch.manual_seed(0)
    net = ZoomNet(BackboneConfig("resnet10t"), ZoomConfig(sampler="affine", box="learned", min_scale=0.2,
                                                          max_scale=0.6), num_classes=3).eval()
    head = net.learned_box
    for bias in (-50.0, 0.0, 50.0):
        with torch.no_grad():
            head.scale.bias.fill_(bias)
            out = net(torch.randn(2, 3, 64, 64))
        b = out["boxes_image"]
        frac = (b[:, 2:] - b[:, :2]) / 64
        expected = {-50.0: 0.2, 0.0: 0.4, 50.0: 0.6}[bias]
        torch.testing.assert_close(frac, torch.full_like(frac, expected), atol=1e-4, rtol=0)
        check_inside(b, (64, 64))


def test_learned_boxes_zoom_branch_cross_entropy_moves_the_box():
    torch.manual_seed(1)
    net = ZoomNet(BackboneConfig("resnet10t"), ZoomConfig(sampler="affine", box="learned", level="image"),
                  num_classes=3)
    out = net(torch.randn(2, 3, 64, 64))
    F.cross_entropy(out["logits_zoom"], torch.tensor([0, 2])).backward()
    assert net.learned_box.scale.weight.grad.abs().sum() > 0
    assert net.learned_box.log_temperature.grad.abs() > 0


def test_moments_box_uses_the_threshold_as_documented():
    net = ZoomNet(BackboneConfig("resnet10t"), ZoomConfig(box="moments", threshold=0.5, padding=0.0, min_size=0.0,
                                                          sigmas=math.sqrt(3), attention="channel_sum",
                                                          cell_offset=0),  # the rule on the map as given
                  num_classes=3).eval()
    # a uniform blob over a weaker plateau: above theta=0.5 only the blob remains
    m = blob(0, 0, 16, 16, 0.3, 16, 16) + blob(4, 4, 12, 12, 0.7, 16, 16)
    m[0, 0, 0] = 0.0
    _, boxes_image, _ = net.boxes(m, (16, 16))
    assert round_boxes(boxes_image[:, 0], (16, 16)).tolist() == [[4, 4, 12, 12]]


def test_step_bench_rows_include_the_new_box_variants():
    from fgzoom.bench.step_bench import default_variants

    names = [v["name"] for v in default_variants((-2, -3))]
    assert names == ["plain", "zoom feature stage=-2", "zoom feature stage=-3", "zoom feature slice",
                     "zoom feature grid_sample", "zoom feature learned", "zoom feature regions=2",
                     "zoom feature ranked", "zoom image", "zoom image grid_sample", "zoom image steps=2"]
    assert [v["name"] for v in default_variants((-2,), box_variants=False)] == [
        "plain", "zoom feature stage=-2", "zoom image"]
    for v in default_variants():
        if v["zoom"] is not None:
            config_from(ZoomConfig, v["zoom"], "model.zoom")  # every row is a valid config


# ------------------------------------------------------------------------------ box warm-up
def test_box_warmup_shrinks_min_size_from_the_whole_frame_to_min_size():
    net = ZoomNet(BackboneConfig("resnet10t"), ZoomConfig(min_size=0.2, box_warmup=0.5), num_classes=3)
    sizes = []
    for progress in (0.0, 0.25, 0.5, 0.9):
        net.progress = progress
        sizes.append(net.min_size())
    assert sizes == pytest.approx([1.0, 0.6, 0.2, 0.2])
    net.progress = 0.0
    with torch.no_grad():
        out = net.eval()(torch.randn(2, 3, 64, 64))
    whole = torch.tensor([[0.0, 0.0, 64.0, 64.0]] * 2)
    torch.testing.assert_close(out["boxes_image"], whole, atol=1e-4, rtol=0)  # the whole frame at the start
    assert ZoomNet(BackboneConfig("resnet10t"), ZoomConfig(min_size=0.2), num_classes=3).min_size() == 0.2


def test_box_warmup_progress_follows_training_and_travels_with_the_checkpoint():
    module = FGVCModule(backbone={"name": "resnet10t"}, num_classes=3, zoom={"box_warmup": 0.5})
    module.net.progress = 0.3
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    restored = FGVCModule(backbone={"name": "resnet10t"}, num_classes=3, zoom={"box_warmup": 0.5})
    assert restored.net.progress == 1.0  # a fresh network counts as trained
    restored.on_load_checkpoint(checkpoint)
    assert restored.net.progress == pytest.approx(0.3)
