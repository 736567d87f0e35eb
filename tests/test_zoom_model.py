"""The zoom network: every interpolation mode at both levels, four backbone families, config checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fgzoom.errors import ConfigError
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.module import FGVCModule
from fgzoom.models.zoom import ZoomConfig, ZoomNet, fuse
from fgzoom.train import train
from tests.conftest import compose_config, tiny_overrides

MODE_KNOBS = [
    ("nearest", None, False),
    ("nearest-exact", None, False),
    ("bilinear", None, False),
    ("bilinear", True, False),
    ("bilinear", False, True),
    ("bicubic", True, False),
    ("bicubic", False, True),
    ("area", None, False),
]


@pytest.mark.parametrize("level", ["feature", "image"])
@pytest.mark.parametrize(("mode", "align_corners", "antialias"), MODE_KNOBS)
def test_forward_backward_every_mode_and_level(level, mode, align_corners, antialias):
    torch.manual_seed(0)
    # the exact slice sampler (crop_resize) takes every F.interpolate mode
    zoom = ZoomConfig(level=level, mode=mode, align_corners=align_corners, antialias=antialias, sampler="slice")
    net = ZoomNet(BackboneConfig("resnet18"), zoom, num_classes=5)
    x = torch.randn(3, 3, 64, 64)
    out = net(x, drop=True, return_zoomed=True)
    assert out["logits"].shape == out["logits_raw"].shape == out["logits_zoom"].shape == (3, 5)
    assert out["boxes"].dtype == torch.int64 and out["boxes_image"].shape == (3, 4)
    grid = (4, 4) if level == "feature" else (64, 64)  # resnet stage -2 has stride 16
    assert out["zoomed"].shape[-2:] == grid
    loss = sum(torch.nn.functional.cross_entropy(out[k], torch.tensor([0, 1, 2]))
               for k in ("logits_raw", "logits_zoom", "logits_attention", "logits_drop"))
    loss.backward()
    assert net.attention.maps[0].weight.grad.abs().sum() > 0  # the head learns through BAP
    assert net.split.model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "efficientnet_b0", "regnety_002"])
def test_feature_level_zoom_on_each_backbone_family(name):
    net = ZoomNet(BackboneConfig(name), ZoomConfig(), num_classes=4).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    assert out["logits"].shape == (2, 4)
    assert torch.allclose(out["logits"].exp().sum(1), torch.ones(2), atol=1e-5)


def test_glimpse_boxes_with_scale_factor_and_channel_sum_attention():
    zoom = ZoomConfig(box="glimpse", glimpse_size=0.5, scale_factor=2.0, attention="channel_sum", sampler="slice")
    net = ZoomNet(BackboneConfig("resnet18"), zoom, num_classes=3).eval()
    out = net(torch.randn(2, 3, 64, 64), return_zoomed=True)
    assert out["zoomed"].shape[-2:] == (4, 4)  # a 2x2 glimpse on the 4x4 grid, zoomed x2
    assert "logits_attention" not in out


def test_explicit_zoom_size_runs_the_tail_on_a_larger_grid():
    net = ZoomNet(BackboneConfig("resnet18"), ZoomConfig(size=(8, 8)), num_classes=3).eval()
    out = net(torch.randn(1, 3, 64, 64), return_zoomed=True)
    assert out["zoomed"].shape[-2:] == (8, 8)


def test_degenerate_attention_falls_back_to_the_whole_frame():
    net = ZoomNet(BackboneConfig("resnet18"), ZoomConfig(attention="channel_sum"), num_classes=3).eval()
    boxes, boxes_image, degenerate = net.boxes(torch.zeros(2, 4, 4), (32, 32), (4, 4))
    assert degenerate.all() and boxes.tolist() == [[[0, 0, 4, 4]]] * 2
    assert boxes_image.tolist() == [[[0, 0, 32, 32]]] * 2


def test_threshold_is_random_in_training_and_fixed_in_eval():
    net = ZoomNet(BackboneConfig("resnet18"), ZoomConfig(threshold_range=(0.2, 0.8)), num_classes=3)
    t = net._thresholds(64, torch.device("cpu"))
    assert isinstance(t, torch.Tensor) and 0.2 <= t.min() and t.max() <= 0.8 and t.std() > 0
    net.eval()
    assert net._thresholds(64, torch.device("cpu")) == 0.5


def test_fusion_is_the_mean_of_probabilities():
    raw, zoom = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    expected = (raw.softmax(-1) + zoom.softmax(-1)) / 2
    assert torch.allclose(fuse(raw, zoom, "mean_prob").exp(), expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "lanczoz"}, "model.zoom.mode='lanczoz'"),
        ({"mode": "nearest", "align_corners": True}, "model.zoom.align_corners=True"),
        ({"mode": "area", "antialias": True}, "model.zoom.antialias=True"),
        ({"threshold": 1.5}, "model.zoom.threshold=1.5"),
        ({"padding": -0.1}, "model.zoom.padding=-0.1"),
        ({"scale_factor": 2.0}, "model.zoom.scale_factor=2.0: needs model.zoom.box=glimpse"),
        ({"level": "pixel"}, "model.zoom.level='pixel'"),
        ({"box": "peak"}, "model.zoom.box='peak'"),
    ],
)
def test_zoom_config_errors_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        dataclasses.replace(ZoomConfig(), **change)


def test_unknown_zoom_key_is_rejected():
    with pytest.raises(ConfigError, match=r"model.zoom: unknown keys \['mdoe'\]"):
        ZoomConfig.from_dict({"mdoe": "bilinear"})


def test_center_loss_and_drop_branch_train(tmp_path, synthetic_root):
    module = FGVCModule(backbone={"name": "resnet18"}, num_classes=4, zoom={},
                        loss={"drop": 1.0, "center": 0.5})
    batch = {"image": torch.randn(4, 3, 48, 48), "label": torch.tensor([0, 1, 2, 3])}
    module.train()
    loss = module._step(batch, "train")
    loss.backward()
    assert torch.isfinite(loss) and module.centers.abs().sum() > 0


@pytest.mark.parametrize("level", ["feature", "image"])
def test_train_script_path_at_each_level(level, tmp_path, synthetic_root):
    overrides = [o for o in tiny_overrides(synthetic_root) if not o.startswith("callbacks.")]
    cfg = compose_config(
        "train.yaml", [*overrides, f"model.zoom.level={level}", "model.zoom.mode=bicubic", "debug=fast"], tmp_path
    )
    assert "test/acc_zoom" in train(cfg)
