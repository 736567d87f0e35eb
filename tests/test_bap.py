"""``model=bap`` (``model.zoom.crop=false``): the zoom model's attention head, BAP classifier and losses without
the crop. It never runs a zoomed view, predicts from its raw branch, boxes at evaluation as the zoom model boxes
(for the localization metrics), and its checkpoints evaluate and predict like the others."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
from omegaconf import OmegaConf

from fgzoom.checkpoints.io import load_model
from fgzoom.cli.evaluate import evaluate
from fgzoom.cli.predict import predict
from fgzoom.cli.train import train
from fgzoom.errors import ConfigError
from fgzoom.models import zoom as zoom_module
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.module import FGVCModule
from fgzoom.models.zoom import ZoomNet
from fgzoom.models.zoom_config import ZoomConfig
from tests.helpers import compose_config, tiny_overrides

BAP = ZoomConfig(crop=False, fusion="raw")
BOX_METRICS = ("iou_mean", "loc_acc@0.5", "maxboxacc_v2")


def _no_crop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the crop and the zoomed pass raise, wherever they would run."""
    def forbidden(*args, **kwargs):
        raise AssertionError("model=bap ran the zoom's crop or zoomed pass")

    monkeypatch.setattr(zoom_module, "crop_views", forbidden)
    for name in ("zoom", "_zoom_outputs", "_zoom_feature", "_zoom_image", "_zoom_recursive"):
        monkeypatch.setattr(ZoomNet, name, forbidden)


def test_bap_config_is_the_zoom_config_without_the_crop(tmp_path):
    bap = compose_config("train.yaml", ["model=bap"], tmp_path)
    zoom = compose_config("train.yaml", ["model=zoom"], tmp_path)
    bap_model, zoom_model = (OmegaConf.to_container(c.model, resolve=True) for c in (bap, zoom))
    assert bap_model["zoom"].pop("crop") is False and zoom_model["zoom"].pop("crop") is True
    assert bap_model["zoom"].pop("fusion") == "raw" and zoom_model["zoom"].pop("fusion") == "mean_prob"
    assert bap_model == zoom_model  # same backbone, head, boxes, losses and recipe


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"crop": "no"}, "model.zoom.crop='no': must be true"),
        ({"crop": False}, "model.zoom.fusion='mean_prob': model.zoom.crop=false predicts from the raw branch"),
        ({"crop": False, "fusion": "raw", "box": "learned"}, "model.zoom.box='learned': model.zoom.crop=false"),
        ({"crop": False, "fusion": "raw", "box": "ranked"}, "model.zoom.box='ranked': model.zoom.crop=false"),
        ({"crop": False, "fusion": "raw", "level": "image", "steps": 2}, "model.zoom.steps=2: model.zoom.crop=false"),
    ],
)
def test_bad_crop_settings_are_one_line_naming_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        dataclasses.replace(ZoomConfig(), **change)


@pytest.mark.parametrize("level", ["feature", "image"])
def test_bap_predicts_its_raw_branch_and_boxes_as_the_zoom_model(level, monkeypatch):
    """Same weights: bap's prediction is its raw branch, equal to the zoom model's raw branch, and its boxes at
    evaluation are the zoom model's boxes; in training it returns no boxes and never crops."""
    torch.manual_seed(0)
    zoom_net = ZoomNet(BackboneConfig("resnet10t"), ZoomConfig(level=level, norm_stats="shared"), 5).eval()
    bap_net = ZoomNet(BackboneConfig("resnet10t"), dataclasses.replace(BAP, level=level), 5).eval()
    bap_net.load_state_dict(zoom_net.state_dict())
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = zoom_net(x)
        _no_crop(monkeypatch)
        out = bap_net(x)
    assert "logits_zoom" not in out and "zoomed" not in out and bap_net.branches == {"acc_raw": "logits_raw"}
    assert torch.equal(out["logits"], out["logits_raw"].float().log_softmax(-1))
    assert torch.equal(out["logits_raw"], expected["logits_raw"])
    for key in ("boxes", "boxes_image", "degenerate", "attention", "logits_attention"):
        assert torch.equal(out[key], expected[key]), key
    train_out = bap_net.train()(x)
    assert {"logits", "logits_raw", "logits_attention", "part_features", "attention"} == set(train_out)
    assert bap_net.branch_stats is None  # no zoom pass, no second set of BatchNorm statistics


def test_bap_trains_without_ever_cropping_and_logs_its_raw_branch(tmp_path, synthetic_root, monkeypatch):
    _no_crop(monkeypatch)
    overrides = [o for o in tiny_overrides(synthetic_root) if not o.startswith("callbacks.")]
    cfg = compose_config("train.yaml", [*overrides, "model=bap", "model.backbone.name=resnet10t", "debug=fast"],
                         tmp_path / "run")
    metrics = train(cfg)
    for split in ("val", "test"):
        assert f"{split}/acc_zoom" not in metrics and metrics[f"{split}/acc"] == metrics[f"{split}/acc_raw"]
        assert {f"{split}/{m}" for m in (*BOX_METRICS, "degenerate_frac")} <= set(metrics), split
        assert all(0.0 <= metrics[f"{split}/{m}"] <= 1.0 for m in BOX_METRICS)


@pytest.mark.slow  # trains an epoch, then runs eval and predict
def test_a_bap_checkpoint_evaluates_and_predicts(tmp_path, synthetic_root, monkeypatch):
    _no_crop(monkeypatch)
    run = tmp_path / "run"
    overrides = [*tiny_overrides(synthetic_root), "model=bap", "model.backbone.name=resnet10t", "logger=none",
                 "callbacks.zoom_figures.num_images=2", "figures_every_n_epochs=1"]
    trained = train(compose_config("train.yaml", overrides, run))
    ckpt = run / "checkpoints" / "last.ckpt"
    assert (run / "figures" / "epoch000.png").is_file()  # attention and boxes, no zoomed panel
    model = load_model(str(ckpt))
    assert isinstance(model, FGVCModule) and model.net.config.crop is False

    out = tmp_path / "eval"
    args = [f"ckpt_path={ckpt}", "trainer=cpu", "logger=none", "eval.num_images=2"]
    metrics = evaluate(compose_config("eval.yaml", args, out))
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics)
    assert "test/acc_zoom" not in metrics and metrics["test/acc"] == metrics["test/acc_raw"]
    assert metrics["test/acc"] == pytest.approx(trained["test/acc"]) and "test/iou_mean" in metrics

    cfg = compose_config("predict.yaml", [f"ckpt_path={ckpt}", f"input={synthetic_root / 'test'}", "num_workers=0"],
                         tmp_path / "predict")
    with predict(cfg).open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][-4:] == ["box1_y0", "box1_x0", "box1_y1", "box1_x1"] and len(rows) > 1  # bap still boxes
