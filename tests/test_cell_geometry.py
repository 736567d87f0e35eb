"""Where a feature cell sits in the image: the resize and box maps of ``ops.cell_geometry``, the offset each
backbone family measures (``backbone_split.geometry``), and the zoom model using it end to end."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from fgzoom.errors import InvalidSettingError
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.backbone_split import split_backbone
from fgzoom.models.backbone_split.geometry import measure_cell_offset, probe_size
from fgzoom.models.zoom import ZoomNet
from fgzoom.models.zoom_config import ZoomConfig
from fgzoom.ops.attention_boxes import resize_attention
from fgzoom.ops.boxes import scale_float_boxes
from fgzoom.ops.cell_geometry import cells_to_image, image_to_cells, linear_weights, resize_maps


def test_zero_offset_is_f_interpolate_bit_for_bit():
    maps = torch.rand(3, 5, 7)
    for grid in ((40, 56), (5, 7), (17, 9)):
        expected = F.interpolate(maps[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0]
        assert torch.equal(resize_maps(maps, grid), expected)
        # the weight-matrix path agrees with F.interpolate too (it is the one used with an offset)
        rows, cols = linear_weights(5, grid[0], 0.0), linear_weights(7, grid[1], 0.0)
        assert torch.allclose(torch.einsum("Hh,bhw,Ww->bHW", rows, maps, cols), expected, atol=1e-6)
    boxes = torch.rand(6, 4) * 40
    assert torch.equal(image_to_cells(boxes, (40, 40), (5, 5), clip=False), scale_float_boxes(boxes, (40, 40), (5, 5)))
    assert torch.equal(cells_to_image(boxes / 8, (5, 5), (40, 40), clip=False), scale_float_boxes(boxes / 8, (5, 5), (40, 40)))


@pytest.mark.parametrize("offset", [(-0.47, 0.3), (0.25, -0.1)])
def test_a_cell_is_drawn_where_its_offset_puts_it(offset):
    """A one-hot map of interior cell (i, j) resizes to a bump centred at ((i + 0.5 + dy) * s, (j + 0.5 + dx) * s),
    and the one-cell box [i, i + 1) maps to the image box centred there; image_to_cells inverts it."""
    h, w, s = 8, 8, 16
    for i, j in ((3, 4), (4, 2)):
        onehot = torch.zeros(1, h, w)
        onehot[0, i, j] = 1
        up = resize_maps(onehot, (h * s, w * s), offset)[0].double()
        ys = torch.arange(h * s, dtype=torch.float64) + 0.5
        cy = float((up.sum(1) * ys).sum() / up.sum())
        cx = float((up.sum(0) * ys).sum() / up.sum())
        assert cy == pytest.approx((i + 0.5 + offset[0]) * s, abs=1e-6)
        assert cx == pytest.approx((j + 0.5 + offset[1]) * s, abs=1e-6)
        box = cells_to_image(torch.tensor([[i, j, i + 1, j + 1]]), (h, w), (h * s, w * s), offset)[0]
        assert float(box[0] + box[2]) / 2 == pytest.approx(cy, abs=1e-4)
        assert float(box[1] + box[3]) / 2 == pytest.approx(cx, abs=1e-4)
        back = image_to_cells(box[None], (h * s, w * s), (h, w), offset)[0]
        assert torch.allclose(back, torch.tensor([i, j, i + 1, j + 1], dtype=torch.float32), atol=1e-5)
    assert torch.equal(resize_attention(onehot, (h * s, w * s), offset), resize_maps(onehot, (h * s, w * s), offset))


def test_the_frame_stays_the_frame_and_the_maps_are_continuous_and_monotone():
    offset = (-0.469, 0.3)
    whole = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    assert torch.equal(image_to_cells(whole, (64, 64), (4, 4), offset), torch.tensor([[0.0, 0.0, 4.0, 4.0]]))
    assert torch.equal(cells_to_image(torch.tensor([[0, 0, 4, 4]]), (4, 4), (64, 64), offset), whole)
    u = torch.linspace(0, 4, 4001)
    boxes = torch.stack([u, u, u, u], dim=1)
    y = cells_to_image(boxes, (4, 4), (64, 64), offset)
    assert (y.diff(dim=0) >= 0).all() and y.diff(dim=0).abs().max() < 64 / 4000 * 40  # no jump
    assert torch.allclose(image_to_cells(y, (64, 64), (4, 4), offset), boxes, atol=1e-4)
    boxes.requires_grad_(True)
    cells_to_image(boxes, (4, 4), (64, 64), offset).sum().backward()  # differentiable (learned boxes)
    assert torch.isfinite(boxes.grad).all()
    with pytest.raises(ValueError, match=r"offset=\(0\.6, 0\.0\)"):
        cells_to_image(whole, (4, 4), (64, 64), (0.6, 0.0))


def test_the_probe_is_an_odd_number_of_cells_of_the_stride():
    assert probe_size(32, None) == (544, 544) and (544 // 32) % 2 == 1
    assert probe_size(16, None) == (528, 528)
    assert probe_size(16, (224, 224)) == (224, 224)


def _pixel_centre(name: str, stage: int) -> tuple[float, float, int]:
    """(measured centre offset of cell i in pixel-index units, i.e. centre pixel = i * s + c, per axis, stride s)."""
    torch.manual_seed(0)
    split = split_backbone(timm.create_model(name, pretrained=False, num_classes=3), stage, need_after=False)
    dy, dx = measure_cell_offset(split)
    s = split.reduction
    return (dy + 0.5) * s - 0.5, (dx + 0.5) * s - 0.5, s


# The receptive-field centre of cell i, in pixel-index units (centre pixel = i * s + c), from each family's layers:
# - resnet18: every stride-2 layer (7x7 conv pad 3, 3x3 max pool pad 1, 3x3 conv pad 1, 1x1 shortcut) is centred on
#   its window's first input: c = 0.
# - resnet10t (ResNet-D): the 2x2 average-pool shortcuts add half the input stride per pooled stage; timm starts the
#   residual branches at zero, so at build time the shortcut is the path: c = 2 + 4 (stride 16), + 8 (stride 32).
# - tf_efficientnet_lite0 (TF "same" padding, even inputs): every stride-2 layer pads 0 (k3) or 1 (k5) before, so
#   its window is centred one input pixel after 2j: c = s - 1.
# - efficientnet_b0 (symmetric padding): c = 0. convnext_atto (4x4 stem, 2x2 downsampling, no padding): the
#   middle of the block, c = s / 2 - 0.5, the plain resize rule.
FAMILIES = {
    "resnet18": lambda s: 0.0,
    "resnet10t": lambda s: {16: 6.0, 32: 14.0}[s],
    "tf_efficientnet_lite0": lambda s: s - 1.0,
    "efficientnet_b0": lambda s: 0.0,
    "convnext_atto": lambda s: s / 2 - 0.5,
}


def _check_family(name: str) -> None:
    """A one-cell box is centred on the cell's receptive field within 1 px, at the default stage -2 and the last."""
    for stage in (-2, -1):
        cy, cx, s = _pixel_centre(name, stage)
        expected = FAMILIES[name](s)
        assert abs(cy - expected) <= 1.0 and abs(cx - expected) <= 1.0, (name, stage, cy, cx, expected)


def test_a_cell_box_is_centred_on_its_receptive_field():
    _check_family("resnet18")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "resnet10t", "efficientnet_b0", "convnext_atto"])
def test_a_cell_box_is_centred_on_its_receptive_field_every_family(name):
    _check_family(name)


def test_patch_transformers_are_centred_on_their_patches():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=64, depth=2)
    assert measure_cell_offset(split_backbone(vit, -2)) == (0.0, 0.0)


def test_the_measurement_leaves_the_split_alone():
    torch.manual_seed(0)
    split = split_backbone(timm.create_model("resnet18", pretrained=False, num_classes=3), -2)
    before = {k: v.clone() for k, v in split.state_dict().items()}
    x = torch.randn(1, 3, 64, 64)
    split.eval()
    expected = split(x)
    measure_cell_offset(split)
    assert all(torch.equal(before[k], v) for k, v in split.state_dict().items())
    assert torch.equal(split(x), expected)
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in split.modules())


def _net(**zoom) -> ZoomNet:
    torch.manual_seed(0)
    return ZoomNet(BackboneConfig(name="resnet18"), ZoomConfig(**zoom), num_classes=3)


def test_the_zoom_model_keeps_its_offset_in_the_checkpoint_and_old_checkpoints_keep_the_resize_rule():
    net = _net()
    assert net.offset == pytest.approx((-0.469, -0.469), abs=0.005)  # resnet18 at stride 16: 0.5 / 16 - 0.5
    state = net.state_dict()
    assert torch.allclose(state["cell_offset"], torch.tensor(net.offset))
    other = _net(cell_offset=0.25)
    assert other.offset == (0.25, 0.25)
    other.load_state_dict(state)
    assert other.offset == net.offset  # the checkpoint's offset, not the config's
    del state["cell_offset"]  # a checkpoint written before the measured offset
    other.load_state_dict(state)
    assert other.offset == (0.0, 0.0)


def test_cell_offset_zero_is_the_plain_resize_rule_and_bad_values_are_one_line():
    net = _net(cell_offset=0, sampler="slice").eval()
    x = torch.randn(2, 3, 64, 64)
    out = net(x)
    assert out["boxes_image"].dtype == torch.int64  # whole cells are whole pixels under the resize rule
    measured = _net(sampler="slice").eval()(x)
    assert measured["boxes_image"].is_floating_point()
    with pytest.raises(InvalidSettingError, match=r"model\.zoom\.cell_offset='middle'"):
        ZoomConfig(cell_offset="middle")
    with pytest.raises(InvalidSettingError, match=r"model\.zoom\.cell_offset=\(0\.1, 0\.2, 0\.3\)"):
        ZoomConfig(cell_offset=[0.1, 0.2, 0.3])
    assert ZoomConfig(cell_offset=[0.1, -0.2]).fixed_cell_offset == (0.1, -0.2)


@pytest.mark.parametrize("level", ["feature", "image"])
def test_a_peaked_attention_map_boxes_the_cell_where_it_sits(level):
    """The zoom model's rule box around a one-cell attention peak is centred on that cell's receptive field."""
    net = _net(level=level, threshold_range=None, box_warmup=0.0, min_size=0.0).eval()
    attention = torch.zeros(1, 4, 4)
    attention[0, 2, 1] = 1.0
    _, boxes_image, _ = net.boxes(attention, (64, 64), (64, 64) if level == "image" else (4, 4))
    y0, x0, y1, x1 = boxes_image[0, 0].tolist()
    dy, dx = net.offset
    assert (y0 + y1) / 2 == pytest.approx((2 + 0.5 + dy) * 16, abs=0.5)
    assert (x0 + x1) / 2 == pytest.approx((1 + 0.5 + dx) * 16, abs=0.5)
