"""MaxBoxAccV2 (``fgzoom.models.box_accuracy``) and the connected components under it (``fgzoom.ops.components``):
the components against ``scipy.ndimage``, the metric on hand-built maps and against a slow loop over images and
thresholds, its names in ``SplitMetrics``, the val thresholds in checkpoints, and a smoke run through training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from fgzoom.errors import ConfigError
from fgzoom.models.box_accuracy import IOU_DELTAS, MaxBoxAccV2
from fgzoom.models.metrics import SplitMetrics
from fgzoom.models.module import FGVCModule
from fgzoom.ops.components import best_component_iou, component_boxes, component_labels

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity
NAMES = ("maxboxacc_v2", "maxboxacc@0.3", "maxboxacc@0.5", "maxboxacc@0.7")


def scipy_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The expected_fn: sorted (y0, x0, y1, x1) of the 8-connected components, by scipy."""
    labels, _ = ndimage.label(mask, structure=EIGHT)
    return sorted((s[0].start, s[1].start, s[0].stop, s[1].stop) for s in ndimage.find_objects(labels))


def hand_masks() -> torch.Tensor:
    """Nested regions (a ring, a ring in its hole, an island in that one's hole), a diagonal line and a pair on
    the other diagonal, a one-cell-wide spiral, an empty and a full mask, blocks touching only at a corner:
    Tensor[6, 12, 12] bool."""
    m = np.zeros((6, 12, 12), dtype=bool)
    m[0] = True
    m[0, 1:11, 1:11] = False  # outer ring
    m[0, 2:10, 2:10] = True
    m[0, 3:9, 3:9] = False  # inner ring
    m[0, 5:7, 5:7] = True  # island in the inner hole
    m[1, range(12), range(12)] = True  # 8-connected through corners only
    m[1, 0, 11] = m[1, 1, 10] = True
    m[2, 0, :] = m[2, :, 11] = m[2, 11, 1:] = m[2, 2:, 1] = m[2, 2, 1:10] = m[2, 2:9, 9] = True  # spiral
    m[4] = True
    m[5, 0:3, 0:3] = m[5, 3:6, 3:6] = m[5, 7:9, 0:2] = True  # the first two touch at a corner
    return torch.from_numpy(m)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (16, 16), (33, 20)])
def test_component_boxes_equal_scipy_on_random_masks(shape):
    generator = torch.Generator().manual_seed(0)
    density = torch.tensor([0.0, 0.2, 0.45, 0.6, 0.8, 1.0]).repeat_interleave(8)[:, None, None]
    masks = torch.rand(len(density), *shape, generator=generator) < density
    boxes, present = component_boxes(component_labels(masks))
    for i, mask in enumerate(masks):
        assert sorted(map(tuple, boxes[i][present[i]].tolist())) == scipy_boxes(mask.numpy()), i


def test_component_boxes_equal_scipy_on_nested_and_diagonal_regions():
    masks = hand_masks()
    labels = component_labels(masks)
    boxes, present = component_boxes(labels)
    for i, mask in enumerate(masks):
        assert sorted(map(tuple, boxes[i][present[i]].tolist())) == scipy_boxes(mask.numpy()), i
    counts = present.sum(dim=1).tolist()
    assert counts == [3, 2, 1, 0, 1, 2]  # the holes of mask 0 give no component; corners connect
    assert labels[4].unique().tolist() == [144]  # the root is the last cell


def test_best_component_iou_torch_and_scipy_agree():
    generator = torch.Generator().manual_seed(1)
    masks = torch.cat([hand_masks(), torch.rand(40, 12, 12, generator=generator) < 0.5])
    corners = torch.randint(0, 13, (masks.shape[0], 2, 2), generator=generator)
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)  # may be empty boxes
    torch_iou = best_component_iou(masks, boxes, "torch")
    scipy_iou = best_component_iou(masks, boxes, "scipy")
    assert torch.equal(torch_iou, scipy_iou) and torch_iou.dtype == torch.float64
    assert torch_iou[3] == 0  # the empty mask


def test_component_errors():
    with pytest.raises(ValueError, match="masks=.*bool Tensor"):
        component_labels(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="boxes=.*one box per mask"):
        best_component_iou(torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="backend='cv2'"):
        best_component_iou(torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(2, 4), "cv2")


# ------------------------------------------------------------------------------------------------ the metric
BACKENDS = ["torch", "scipy"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_blob_scores_one_and_the_wrong_corner_zero(backend):
    gt = torch.tensor([[8.0, 4.0, 20.0, 16.0]])
    blob = torch.zeros(1, 32, 32)
    blob[0, 8:20, 4:16] = 1.0
    corner = torch.zeros(1, 32, 32)
    corner[0, 24:32, 24:32] = 1.0
    for attention, expected in ((blob, 1.0), (corner, 0.0)):
        metric = MaxBoxAccV2(backend=backend)
        metric.update(attention, gt, (32, 32))
        table = metric.compute()
        assert table.shape == (100, 3)
        best, tau = metric.best(table)
        assert best.tolist() == [expected] * 3
    assert tau.tolist() == [0.0] * 3  # a tie over every threshold: the lowest, as np.argmax


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_middle_thresholds_find_the_box(backend):
    """A plateau of 0.25 over the frame (0 in one corner cell), 0.55 on the GT box, 1 on a small peak inside it:
    tau < 0.25 boxes the frame (IoU 0.25), 0.25 <= tau < 0.55 the GT box, tau >= 0.55 the peak (IoU 1/16)."""
    attention = torch.full((1, 32, 32), 0.25)
    attention[0, 0, 0] = 0.0
    attention[0, 8:24, 8:24] = 0.55
    attention[0, 14:18, 14:18] = 1.0
    metric = MaxBoxAccV2(num_thresholds=20, backend=backend)  # steps of 0.05
    metric.update(attention, torch.tensor([[8, 8, 24, 24]]), (32, 32))
    table = metric.compute()
    right = (torch.arange(20) >= 5) & (torch.arange(20) < 11)  # tau in [0.25, 0.55)
    assert torch.equal(table, right[:, None].float().expand(20, 3))
    best, tau = metric.best(table)
    assert best.tolist() == [1.0] * 3 and tau == pytest.approx([0.25] * 3)
    assert metric.at(table, torch.tensor([0.1, 0.3, 0.6])).tolist() == [0.0, 1.0, 0.0]


def reference_table(attention: torch.Tensor, boxes: torch.Tensor, grid: tuple[int, int], weight: torch.Tensor,
                    taus: np.ndarray) -> np.ndarray:
    """The expected_fn: loop over images and thresholds, scipy components, IoU in float64 numpy."""
    maps = F.interpolate(attention[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0].numpy()
    correct = np.zeros((len(taus), len(IOU_DELTAS)))
    for a, (y0, x0, y1, x1), w in zip(maps, boxes.double().tolist(), weight.tolist(), strict=True):
        norm = (a - a.min()) / (a.max() - a.min())  # float32, as the metric
        for t, tau in enumerate(taus):
            best = 0.0
            for by0, bx0, by1, bx1 in scipy_boxes(norm > tau):
                inter = max(0, min(by1, y1) - max(by0, y0)) * max(0, min(bx1, x1) - max(bx0, x0))
                union = (by1 - by0) * (bx1 - bx0) + (y1 - y0) * (x1 - x0) - inter
                best = max(best, inter / union)
            correct[t] += w * (best >= np.array(IOU_DELTAS))
    return correct / weight.sum().item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_table_equals_a_loop_over_images_and_thresholds(backend):
    generator = torch.Generator().manual_seed(2)
    grid = (24, 20)
    attention = torch.rand(6, 5, 4, generator=generator) ** 3
    corners = torch.stack([torch.randint(0, 25, (6, 2), generator=generator),
                           torch.randint(0, 21, (6, 2), generator=generator)], dim=2)  # [6, 2, (y, x)]
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values + 1], dim=1).clamp(max=torch.tensor(
        [24, 20, 24, 20]))
    weight = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    metric = MaxBoxAccV2(num_thresholds=20, backend=backend, chunk_cells=7 * 24 * 20)  # chunks across images
    metric.update(attention[:3], boxes[:3], grid, weight[:3].bool())
    metric.update(attention[3:], boxes[3:], grid, weight[3:])
    expected = reference_table(attention, boxes, grid, weight, metric.thresholds().numpy())
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=0, atol=1e-6)
    assert 0 < expected.sum() < expected.size  # neither all right nor all wrong


def test_a_large_grid_is_scored_downscaled_to_max_side():
    generator = torch.Generator().manual_seed(3)
    attention = torch.rand(4, 6, 6, generator=generator)
    boxes = torch.tensor([[4, 8, 40, 44], [0, 0, 48, 48], [10, 2, 20, 30], [30, 30, 48, 40]]).float()
    large = MaxBoxAccV2(max_side=24)
    large.update(attention, boxes, (48, 48))
    small = MaxBoxAccV2(max_side=None)
    small.update(attention, boxes / 2, (24, 24))
    assert large.eval_grid((48, 48)) == (24, 24) and large.eval_grid((448, 224)) == (24, 12)
    assert MaxBoxAccV2().eval_grid((224, 100)) == (224, 100)  # up to max_side: the image grid itself
    assert torch.equal(large.compute(), small.compute())


def test_a_batch_without_boxes_is_not_labelled(monkeypatch):
    import fgzoom.models.box_accuracy as box_accuracy

    def fail(*args, **kwargs):
        raise AssertionError("labelled a batch without boxes")

    monkeypatch.setattr(box_accuracy, "best_component_iou", fail)
    metric = MaxBoxAccV2()
    metric.update(torch.rand(2, 4, 4), torch.zeros(2, 4), (8, 8), torch.zeros(2, dtype=torch.bool))
    assert metric.update_count == 1 and metric.total == 0 and metric.compute().isnan().all()


def test_metric_errors():
    with pytest.raises(ValueError, match="num_thresholds=0"):
        MaxBoxAccV2(num_thresholds=0)
    with pytest.raises(ValueError, match="deltas="):
        MaxBoxAccV2(deltas=(0.5, 1.5))
    with pytest.raises(ValueError, match="max_side=0"):
        MaxBoxAccV2(max_side=0)
    with pytest.raises(ValueError, match="weight="):
        MaxBoxAccV2().update(torch.rand(2, 4, 4), torch.zeros(2, 4), (8, 8), torch.ones(3))
    with pytest.raises(ValueError, match="grid="):
        MaxBoxAccV2().update(torch.rand(2, 4, 4), torch.zeros(2, 4), (8, 0))


# ------------------------------------------------------------------------------------------------ wiring
def _outputs(b: int = 4) -> tuple[dict, dict]:
    logits = torch.eye(4)[:b] * 3
    attention = torch.zeros(b, 8, 8)
    attention[:, 2:5, 2:5] = 1.0
    out = {"logits": logits, "logits_raw": logits, "attention": attention,
           "boxes_image": torch.tensor([[8, 8, 20, 20]] * b)}
    batch = {"image": torch.zeros(b, 3, 32, 32), "box": torch.tensor([[8.0, 8.0, 20.0, 20.0]] * b),
             "has_box": torch.tensor([True] * (b - 1) + [False])}
    return out, batch


def test_split_metrics_log_maxboxacc_on_val_and_test():
    out, batch = _outputs()
    val = SplitMetrics("val", 4, {"acc_raw": "logits_raw"}, box_accuracy=True)
    val.update(out, torch.arange(4), torch.tensor(1.0), batch)
    values = val.compute()
    assert {f"val/{name}" for name in NAMES} <= set(values) and "val/boxacc_v2@val_tau" not in values
    assert float(values["val/maxboxacc_v2"]) == 1.0 and val.best_tau.shape == (3,)

    test = SplitMetrics("test", 4, {"acc_raw": "logits_raw"}, box_accuracy=True)
    test.update(out, torch.arange(4), torch.tensor(1.0), {k: v for k, v in batch.items() if k != "image"},
                grid=(32, 32))
    values = test.compute(val_tau=val.best_tau)
    assert float(values["test/boxacc_v2@val_tau"]) == 1.0 and {f"test/{name}" for name in NAMES} <= set(values)
    assert float(test.compute(val_tau=torch.tensor([0.95, 0.95, 0.95]))["test/boxacc_v2@val_tau"]) < 1.0

    train = SplitMetrics("train", 4, {"acc_raw": "logits_raw"})  # off: no key, no cost
    train.update(out, torch.arange(4), torch.tensor(1.0), batch)
    assert not any("boxacc" in key for key in train.compute()) and train.box_accuracy is None


def test_split_metrics_without_boxes_or_attention_log_no_maxboxacc():
    out, batch = _outputs()
    metrics = SplitMetrics("val", 4, {}, box_accuracy=True)
    metrics.update({k: v for k, v in out.items() if k != "attention"}, torch.arange(4), torch.tensor(1.0), batch)
    metrics.update(out, torch.arange(4), torch.tensor(1.0), {**batch, "has_box": torch.zeros(4, dtype=torch.bool)})
    values = metrics.compute()
    assert not any("boxacc" in key for key in values)
    assert metrics.best_tau is None
    with pytest.raises(ValueError, match="grid=\\(H, W\\)"):
        metrics.update(out, torch.arange(4), torch.tensor(1.0), {k: v for k, v in batch.items() if k != "image"})


def test_val_thresholds_travel_in_checkpoints(tmp_path):
    module = FGVCModule(backbone={"name": "resnet10t"}, num_classes=4, zoom={"level": "image"})
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["fgzoom"]["val_box_tau"] is None
    module.val_box_tau = torch.tensor([0.25, 0.5, 0.75])
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["fgzoom"]["val_box_tau"] == [0.25, 0.5, 0.75]
    restored = FGVCModule.from_saved(module.hparams, module.state_dict(), val_box_tau=[0.25, 0.5, 0.75])
    assert torch.equal(restored.val_box_tau, module.val_box_tau)
    assert module.state_dict().keys() == restored.state_dict().keys()  # not a buffer: state_dict unchanged
    from fgzoom.checkpoints.model_folder import load_model_folder, save_model_folder

    folder = save_model_folder(module, checkpoint["fgzoom"], tmp_path / "model")
    assert torch.equal(load_model_folder(folder).val_box_tau, module.val_box_tau)
    restored.on_load_checkpoint({"state_dict": {}, "fgzoom": {"progress": 1.0}})  # saved before it existed
    assert restored.val_box_tau is None
    with pytest.raises(ConfigError, match="fgzoom.val_box_tau"):
        restored.on_load_checkpoint({"state_dict": {}, "fgzoom": {"val_box_tau": [0.5]}})


def test_a_smoke_run_logs_maxboxacc_on_val_and_test(tmp_path, synthetic_root):
    from fgzoom.cli.train import train
    from tests.helpers import compose_config, tiny_overrides

    overrides = [o for o in tiny_overrides(synthetic_root) if not o.startswith("callbacks.")]
    metrics = train(compose_config("train.yaml", [*overrides, "debug=fast"], tmp_path))
    for split in ("val", "test"):
        for name in NAMES:
            assert 0.0 <= metrics[f"{split}/{name}"] <= 1.0, (split, name)
    assert 0.0 <= metrics["test/boxacc_v2@val_tau"] <= metrics["test/maxboxacc_v2"]
