"""The recursive zoom (``model.zoom.steps`` > 1): nested boxes, the network's outputs, its loss, its figure."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fgzoom.cli.train import train
from fgzoom.errors import ConfigError
from fgzoom.eval.figures import grid_data, grid_figure
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.loss import FGVCLoss
from fgzoom.models.zoom import ZoomNet
from fgzoom.models.zoom_config import ZoomConfig
from fgzoom.ops.boxes import nest_boxes
from fgzoom.ops.crop_affine import crop_affine
from tests.helpers import compose_config, tiny_overrides

RECURSIVE = ZoomConfig(level="image", steps=2)


def _net(config: ZoomConfig = RECURSIVE, num_classes: int = 4) -> ZoomNet:
    torch.manual_seed(0)
    return ZoomNet(BackboneConfig(name="resnet10t"), config, num_classes, input_size=32)


def test_nest_boxes_maps_a_box_on_the_view_to_the_source():
    outer = torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    assert torch.equal(nest_boxes(outer, torch.tensor([[0.0, 0.0, 96.0, 96.0]]), (96, 96)), outer)
    inner = torch.tensor([[48.0, 24.0, 96.0, 48.0]])  # the lower half of the view, its second quarter across
    assert torch.allclose(nest_boxes(outer, inner, (96, 96)), torch.tensor([[30.0, 40.0, 50.0, 60.0]]))


def test_cropping_the_nested_box_equals_cropping_the_crop():
    """On a linear ramp bilinear sampling is exact, so the view of the nested box, cut from the source, is the
    view of the inner box cut from the first view (inner box away from the view's border)."""
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    image = torch.stack([ys, xs, 2 * ys - xs])[None]  # [1, 3, 64, 64]
    outer = torch.tensor([[8.0, 4.0, 40.0, 52.0]])
    inner = torch.tensor([[3.0, 5.0, 12.5, 14.0]])
    view = crop_affine(image, outer, (16, 16), mode="bilinear")
    twice = crop_affine(view, inner, (8, 8), mode="bilinear")
    once = crop_affine(image, nest_boxes(outer, inner, (16, 16)), (8, 8), mode="bilinear")
    torch.testing.assert_close(once, twice, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "model.zoom.steps=0: must be >= 1"),
        ({"level": "feature"}, "model.zoom.steps=2: a recursive zoom needs model.zoom.level=image"),
        ({"sampler": "slice"}, "model.zoom.steps=2: .*model.zoom.sampler=continuous or grid_sample"),
        ({"box": "glimpse"}, "model.zoom.steps=2: .*a rule box"),
        ({"num_regions": 2}, "model.zoom.steps=2: .*model.zoom.num_regions=1"),
    ],
)
def test_steps_config_errors_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(RECURSIVE, **change)


@pytest.mark.parametrize("steps", [2, 3])
def test_each_step_box_lies_inside_the_one_before(steps):
    net = _net(dataclasses.replace(RECURSIVE, steps=steps, min_size=0.0, box_warmup=0.0)).eval()
    with torch.no_grad():
        out = net(torch.randn(3, 3, 64, 64), return_zoomed=True)
    boxes = out["boxes_steps"]  # [B, n, 4] on the 64 px source
    assert boxes.shape == (3, steps, 4) and out["logits_views"].shape == (3, steps, 4)
    assert out["logits_attention_views"].shape == (3, steps - 1, 4)
    outer, inner = boxes[:, :-1], boxes[:, 1:]
    assert (inner[..., :2] >= outer[..., :2] - 1e-4).all() and (inner[..., 2:] <= outer[..., 2:] + 1e-4).all()
    side = lambda b: (b[..., 2:] - b[..., :2]).amin(-1)  # noqa: E731
    assert (side(inner) < side(outer) - 1e-3).all()  # each step magnifies
    assert torch.equal(out["boxes_image"], boxes[:, -1]) and torch.equal(out["boxes"], boxes[:, -1])
    assert out["zoomed"].shape == (3, 3, 32, 32)  # the last step's view, at the backbone's input size
    mean_prob = out["logits_views"].float().softmax(-1).mean(1)
    torch.testing.assert_close(out["logits_zoom"].exp(), mean_prob)


def test_min_size_is_a_fraction_of_the_source_frame_at_every_step():
    """A fraction of each view would compound (0.3 of 0.3 of the frame at step 2): it holds on the source."""
    net = _net(dataclasses.replace(RECURSIVE, steps=3, min_size=0.3, box_warmup=0.0, sigmas=0.1)).eval()
    with torch.no_grad():
        boxes = net(torch.randn(2, 3, 64, 64))["boxes_steps"]  # [B, 3, 4]
    assert ((boxes[..., 2:] - boxes[..., :2]) >= 0.3 * 64 - 1e-3).all()
    assert ((boxes >= -1e-4) & (boxes <= 64 + 1e-4)).all()


def test_the_loss_trains_every_view_and_the_attention_on_the_views():
    net = _net().train()
    out = net(torch.randn(4, 3, 64, 64))
    labels = torch.tensor([0, 1, 2, 3])
    criterion = FGVCLoss({"raw": 0.0, "zoom": 0.0, "attention": 1.0}, 4)
    without_views = criterion({k: v for k, v in out.items() if k != "logits_attention_views"}, labels)
    loss = criterion(out, labels)
    assert loss > without_views  # the views' BAP cross-entropy is added
    (loss - without_views).backward()  # only the views' term: it reaches the head through the view pass
    assert net.attention.classifier.weight.grad.abs().sum() > 0
    assert net.attention.maps[0].weight.grad.abs().sum() > 0


def test_the_attention_head_keeps_zoom_statistics_of_its_own():
    net = _net().train()
    bn = net.attention.maps[1]
    assert hasattr(bn, "zoom_running_mean")  # steps > 1: the head reads the zoomed views too
    raw_before, zoom_before = bn.running_mean.clone(), bn.zoom_running_mean.clone()
    net(torch.randn(4, 3, 64, 64))
    assert not torch.equal(bn.running_mean, raw_before) and not torch.equal(bn.zoom_running_mean, zoom_before)
    assert not hasattr(_net(ZoomConfig(level="image")).attention.maps[1], "zoom_running_mean")  # one step: as before


def test_figure_draws_every_step(tmp_path):
    net = _net()
    data = grid_data(net, {"image": torch.randn(2, 3, 64, 64), "label": torch.tensor([0, 1])})
    assert data.steps and data.boxes.shape == (2, 2, 4) and data.zoomed.shape == (2, 2, 3, 32, 32)
    figure = grid_figure(data, ["a", "b", "c", "d"], [0.5] * 3, [0.25] * 3)
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "zoom box, step 1" in labels and "step 2 (inside step 1)" in labels


def test_train_script_runs_a_recursive_zoom(tmp_path, synthetic_root):
    overrides = [o for o in tiny_overrides(synthetic_root) if not o.startswith("callbacks.")]
    cfg = compose_config(
        "train.yaml", [*overrides, "model.zoom.level=image", "model.zoom.steps=2", "debug=fast"], tmp_path
    )
    metrics = train(cfg)
    assert "test/acc_zoom" in metrics and "test/iou_mean" in metrics


def test_predict_with_test_time_augmentation():
    from fgzoom.models.module import FGVCModule

    module = FGVCModule(backbone={"name": "resnet10t"}, num_classes=4, zoom={"level": "image", "steps": 2},
                        input_size=32).eval()
    module.set_tta([(False, None), (True, None), (False, 0.3)])
    batch = {"image": torch.randn(2, 3, 64, 64), "label": torch.tensor([0, 1])}
    with torch.no_grad():
        result = module.predict_step(batch, 0)
    assert result["boxes_image"].shape == (2, 4) and result["probs_tta"].shape == (2, 4)
    torch.testing.assert_close(result["probs_tta"].sum(-1), torch.ones(2))
    assert torch.isfinite(result["loss"])


def test_exports_as_one_program():
    from fgzoom.cli.export import LogitsModel, export_program

    wrapped = LogitsModel(_net().eval()).eval()
    image = torch.randn(2, 3, 64, 64)
    program = export_program(wrapped, image)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(image), wrapped(image))
