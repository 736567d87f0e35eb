"""model.input_size: the backbone runs on a downsampled view; level=image zooms from the loaded batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fgzoom.cli.train import train
from fgzoom.errors import ConfigError
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.input_view import InputView
from fgzoom.models.module import FGVCModule
from fgzoom.models.plain import PlainNet
from fgzoom.models.zoom import ZoomNet
from fgzoom.models.zoom_config import ZoomConfig
from fgzoom.ops import crop_resize
from fgzoom.ops.cell_geometry import image_to_cells
from tests.helpers import compose_config, tiny_overrides


def test_view_is_an_antialiased_resize_and_identity_when_unset():
    x = torch.randn(2, 3, 64, 64)
    assert InputView(None)(x) is x
    assert InputView(64)(x) is x
    expected = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(InputView(32)(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0, 4, -1, 12.5, "96", True])
def test_bad_input_size_names_the_key(bad):
    with pytest.raises(ConfigError, match=r"^model\.input_size="):
        InputView(bad)


def test_plain_runs_the_backbone_on_the_view():
    torch.manual_seed(0)
    net = PlainNet(BackboneConfig("resnet18"), num_classes=3, input_size=32).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = net.model(F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True))
        torch.testing.assert_close(net(x)["logits"], expected)


def test_image_level_zooms_from_the_loaded_batch():
    """Boxes are on the loaded 64x64 grid; the zoomed view is their crop of the loaded batch at 32x32."""
    torch.manual_seed(0)
    zoom = ZoomConfig(level="image", stage=-2, threshold_range=None, sampler="slice")
    net = ZoomNet(BackboneConfig("resnet18"), zoom, num_classes=3, input_size=32).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = net(x, return_zoomed=True)
        boxes = out["boxes_image"]
        assert torch.equal(boxes, out["boxes"])
        assert int(boxes[:, 2:].max()) <= 64 and int((boxes[:, 2:] - boxes[:, :2]).min()) >= 1
        expected = crop_resize(x, boxes, size=(32, 32), mode="bilinear")
        torch.testing.assert_close(out["zoomed"], expected, rtol=0, atol=0)
        torch.testing.assert_close(out["logits_zoom"], net.split(expected))
        torch.testing.assert_close(out["logits_raw"], net.split(InputView(32)(x)))


def test_feature_level_reports_boxes_on_the_loaded_grid():
    # whole feature cells, under the plain resize rule (cell_offset=0: cells on their pixel blocks)
    zoom = ZoomConfig(level="feature", sampler="slice", cell_offset=0)
    net = ZoomNet(BackboneConfig("resnet18"), zoom, num_classes=3, input_size=32).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = net(x)
    # resnet18 stage -2 on a 32x32 view is a 2x2 grid; its cells are 32x32 pixels of the loaded batch
    assert set((out["boxes_image"] % 32).flatten().tolist()) == {0}
    assert int(out["boxes_image"].max()) <= 64
    # with the measured offset (in cells, so it scales to the loaded grid, not the view) whole cells of the
    # 2x2 grid cover fractional regions of the 64x64 batch
    measured = ZoomNet(BackboneConfig("resnet18"), ZoomConfig(level="feature", sampler="slice"), num_classes=3,
                       input_size=32).eval()
    with torch.no_grad():
        shifted = measured(x)["boxes_image"]
    cells = image_to_cells(shifted, (64, 64), (2, 2), measured.offset)
    assert torch.allclose(cells, cells.round(), atol=1e-4) and 0 <= float(shifted.min()) <= float(shifted.max()) <= 64


def test_module_trains_a_step_with_a_view_and_keeps_state_dict_keys():
    with_view = FGVCModule(backbone={"name": "resnet18"}, num_classes=3, zoom={"level": "image"}, input_size=32)
    without = FGVCModule(backbone={"name": "resnet18"}, num_classes=3, zoom={"level": "image"})
    assert with_view.state_dict().keys() == without.state_dict().keys()
    batch = {"image": torch.randn(2, 3, 64, 64), "label": torch.tensor([0, 2])}
    loss = with_view.criterion(with_view(batch["image"]), batch["label"])
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("model", ["plain", "zoom"])
def test_train_path_with_a_smaller_input_view(model, tmp_path, synthetic_root):
    """data.image_size=48 loaded, model.input_size=32 for the backbone; image-level boxes on the 48 grid."""
    overrides = [o for o in tiny_overrides(synthetic_root) if not o.startswith("callbacks.")]
    extra = ["model.zoom.level=image"] if model == "zoom" else []
    cfg = compose_config(
        "train.yaml", [*overrides, f"model={model}", *extra, "model.input_size=32", "debug=fast"], tmp_path
    )
    metrics = train(cfg)
    assert "test/acc" in metrics
    if model == "zoom":
        assert "test/iou_mean" in metrics
