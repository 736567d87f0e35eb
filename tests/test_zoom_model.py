"""The zoom network: every interpolation mode at both levels, four backbone families, config checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fgzoom.cli.train import train
from fgzoom.errors import ConfigError
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.module import FGVCModule
from fgzoom.models.zoom import ZoomNet, fuse
from fgzoom.models.zoom_config import ZoomConfig
from tests.helpers import compose_config, tiny_overrides

MODE_KNOBS = [
    ("nearest", None, False),
    ("nearest-exact", None, False),
    ("bilinear", None, False),
    ("bilinear", True, False),
    ("bilinear", False, True),
    ("bicubic", True, False),
    ("bicubic", False, True),
    ("area", None, False),
    ("lanczos", None, True),
]


@pytest.mark.parametrize("sampler", ["continuous", "slice"])
@pytest.mark.parametrize("level", ["feature", "image"])
@pytest.mark.parametrize(("mode", "align_corners", "antialias"), MODE_KNOBS)
def test_forward_backward_every_mode_and_level(level, mode, align_corners, antialias, sampler):
    torch.manual_seed(0)
    # both crop_resize samplers take every F.interpolate mode: the float box (continuous) and whole cells (slice)
    zoom = ZoomConfig(level=level, mode=mode, align_corners=align_corners, antialias=antialias, sampler=sampler)
    net = ZoomNet(BackboneConfig("resnet18"), zoom, num_classes=5)
    x = torch.randn(3, 3, 64, 64)
    net.attention_drop = True  # the module sets it when model.loss.drop > 0
    out = net(x, return_zoomed=True)
    assert out["logits"].shape == out["logits_raw"].shape == out["logits_zoom"].shape == (3, 5)
    assert out["boxes"].dtype == (torch.int64 if sampler == "slice" else torch.float32)
    assert out["boxes_image"].shape == (3, 4)
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


@pytest.mark.parametrize("sampler", ["slice", "continuous"])
def test_glimpse_boxes_with_scale_factor_and_channel_sum_attention(sampler):
    zoom = ZoomConfig(box="glimpse", glimpse_size=0.5, scale_factor=2.0, attention="channel_sum", sampler=sampler)
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
    t = net.thresholds(64, torch.device("cpu"))
    assert isinstance(t, torch.Tensor) and 0.2 <= t.min() and t.max() <= 0.8 and t.std() > 0
    net.eval()
    assert net.thresholds(64, torch.device("cpu")) == 0.5


def test_threshold_argument_overrides_theta_for_one_call():
    """A higher theta keeps less of the attention: the threshold rule's box can only shrink."""
    torch.manual_seed(0)
    zoom = ZoomConfig(box="threshold", threshold_range=None, min_size=0.0, box_warmup=0.0)
    net = ZoomNet(BackboneConfig("resnet18"), zoom, num_classes=3).eval()
    x = torch.randn(4, 3, 64, 64)
    loose, tight, default = net(x, threshold=0.05), net(x, threshold=0.95), net(x)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    assert (area(tight["boxes_image"]) <= area(loose["boxes_image"])).all()
    assert (area(tight["boxes_image"]) < area(loose["boxes_image"])).any()
    assert torch.equal(default["boxes_image"], net(x, threshold=0.5)["boxes_image"])


@pytest.mark.parametrize("fusion", ["mean_prob", "mean_logit", "raw", "zoom"])
def test_every_fusion_returns_log_probabilities_that_follow_its_branches(fusion):
    torch.manual_seed(0)
    net = ZoomNet(BackboneConfig("resnet10t"), ZoomConfig(fusion=fusion), num_classes=6).eval()
    out = net(torch.randn(8, 3, 64, 64))
    assert torch.allclose(out["logits"].logsumexp(-1), torch.zeros(8), atol=1e-5)  # log-probabilities
    raw, zoom = out["logits_raw"].softmax(-1), out["logits_zoom"].softmax(-1)
    expected = {
        "mean_prob": (raw + zoom) / 2,
        "mean_logit": ((out["logits_raw"] + out["logits_zoom"]) / 2).softmax(-1),
        "raw": raw,
        "zoom": zoom,
    }[fusion]
    assert torch.allclose(out["logits"].exp(), expected, atol=1e-6)


def test_confident_branch_decides_the_mean_prob_fusion():
    unsure_raw, confident_zoom = torch.tensor([[0.2, 0.0, 0.0]]), torch.tensor([[0.0, 6.0, 0.0]])
    assert fuse(unsure_raw, confident_zoom, "mean_prob").argmax().item() == 1
    assert fuse(unsure_raw, confident_zoom, "raw").argmax().item() == 0


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
    with pytest.raises(ConfigError, match=r"model.zoom.mdoe: unknown key; valid keys of model.zoom: level, "):
        FGVCModule(backbone={"name": "resnet10t"}, num_classes=3, zoom={"mdoe": "bilinear"})


def test_unknown_backbone_key_is_one_line_before_anything_is_built(tmp_path, synthetic_root):
    from fgzoom.cli.runtime import validate_config

    cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), "+model.backbone.foo=1"], tmp_path)
    with pytest.raises(ConfigError, match=r"model.backbone.foo: unknown key; valid keys of model.backbone: name, "):
        validate_config(cfg)


def test_center_loss_and_drop_branch_train(tmp_path, synthetic_root):
    module = FGVCModule(backbone={"name": "resnet18"}, num_classes=4, zoom={},
                        loss={"drop": 1.0, "center": 0.5})
    batch = {"image": torch.randn(4, 3, 48, 48), "label": torch.tensor([0, 1, 2, 3])}
    module.train()
    out = module(batch["image"])
    assert "logits_drop" in out  # model.loss.drop > 0 switches the attention-drop branch on
    loss = module.criterion(out, batch["label"])
    loss.backward()
    assert torch.isfinite(loss) and module.criterion.centers.abs().sum() > 0
    assert "criterion.centers" in module.state_dict()


@pytest.mark.parametrize("level", ["feature", "image"])
def test_train_script_path_at_each_level(level, tmp_path, synthetic_root):
    overrides = [o for o in tiny_overrides(synthetic_root) if not o.startswith("callbacks.")]
    cfg = compose_config(
        "train.yaml", [*overrides, f"model.zoom.level={level}", "model.zoom.mode=bicubic", "debug=fast"], tmp_path
    )
    assert "test/acc_zoom" in train(cfg)


def test_mean_prob_keeps_the_order_of_classes_far_below_the_top():
    """Probabilities below 1e-12 used to tie at a clamp before the log, so top-5 accuracy picked among ties."""
    raw = torch.tensor([[60.0, 30.0, 20.0, 10.0, 0.0, -10.0]])
    zoom = torch.tensor([[50.0, 25.0, 15.0, 5.0, -5.0, -15.0]])
    fused = fuse(raw, zoom, "mean_prob")
    assert fused.argsort(-1, descending=True).tolist() == [[0, 1, 2, 3, 4, 5]]
    assert fused.diff(dim=-1).lt(0).all()  # strictly decreasing: no ties
    torch.testing.assert_close(fused.exp().sum(-1), torch.ones(1))
