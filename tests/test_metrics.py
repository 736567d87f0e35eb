"""SplitMetrics: every logged accuracy is its own number, whatever the first batch looked like; the box-centre
error is the signed shift of the box from the ground truth."""

import pytest
import torch

from fgzoom.models.metrics import SplitMetrics


def test_top5_macro_and_branches_stay_separate_after_an_all_correct_first_batch():
    """torchmetrics merges metrics whose states match after the first update (compute groups); a first batch
    that every metric gets right must not tie acc_top5 to acc_macro or one branch to another."""
    metrics = SplitMetrics("test", 8, {"acc_raw": "logits_raw", "acc_zoom": "logits_zoom"})
    labels = torch.arange(8)
    right = torch.eye(8) * 5
    second = torch.eye(8)[[1, 0, 3, 2, 5, 4, 7, 6]] * 5 + torch.eye(8) * 4  # the label ranks 2nd: top-5 right
    wrong = torch.roll(right, 1, dims=0)
    metrics.update({"logits": right, "logits_raw": right, "logits_zoom": right}, labels, torch.tensor(0.0))
    for _ in range(2):
        metrics.update({"logits": second, "logits_raw": right, "logits_zoom": wrong}, labels, torch.tensor(0.0))
    values = {name: float(value) for name, value in metrics.compute().items()}
    assert values["test/acc"] == pytest.approx(1 / 3)
    assert values["test/acc_macro"] == pytest.approx(1 / 3)
    assert values["test/acc_top5"] == pytest.approx(1.0)
    assert values["test/acc_raw"] == pytest.approx(1.0)
    assert values["test/acc_zoom"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------ box-centre error
CENTRE_KEYS = ("box_dy", "box_dx", "box_center_err")
TRUTH = torch.tensor([[10.0, 4.0, 20.0, 12.0], [0.0, 0.0, 8.0, 8.0], [30.0, 30.0, 40.0, 48.0]])


def _box_values(metrics: SplitMetrics, boxes: torch.Tensor, has_box: list[bool], truth=TRUTH) -> dict[str, float]:
    b = truth.shape[0]
    logits = torch.eye(4)[:b]
    batch = {"box": truth, "has_box": torch.tensor(has_box)}
    metrics.update({"logits": logits, "boxes_image": boxes}, torch.arange(b), torch.tensor(0.0), batch)
    return {name: float(value) for name, value in metrics.compute().items()}


@pytest.mark.parametrize("dtype", [torch.int64, torch.float32], ids=["slice", "float"])
def test_box_centre_error_is_the_shift_of_the_boxes(dtype):
    """Boxes moved by +3 px down and -2 px left of the ground truth: box_dy 3, box_dx -2, box_center_err
    sqrt(13), exactly; a sample without a ground-truth box (moved far) does not count."""
    shift = torch.tensor([3.0, -2.0, 3.0, -2.0])
    boxes = TRUTH + shift
    boxes[2] += 25.0  # has_box False: ignored
    values = _box_values(SplitMetrics("val", 4, {}), boxes.to(dtype), [True, True, False])
    assert values["val/box_dy"] == 3.0 and values["val/box_dx"] == -2.0
    assert values["val/box_center_err"] == pytest.approx(13 ** 0.5, abs=1e-6)
    assert values["val/iou_mean"] < 1.0


def test_box_centre_error_averages_signed_shifts_over_batches_and_processes():
    """Opposite shifts cancel in box_dy/box_dx but not in box_center_err; the states are sums (as DDP
    reduces them), so two halves merged give the numbers of one process that saw both."""
    up, down = TRUTH[:2] + torch.tensor([-4.0, 0.0, -4.0, 0.0]), TRUTH[:2] + torch.tensor([4.0, 6.0, 4.0, 6.0])
    together, first, second = (SplitMetrics("test", 4, {}) for _ in range(3))
    for metrics, parts in ((together, (up, down)), (first, (up,)), (second, (down,))):
        for boxes in parts:
            metrics.update({"logits": torch.eye(4)[:2], "boxes_image": boxes}, torch.arange(2), torch.tensor(0.0),
                           {"box": TRUTH[:2], "has_box": torch.tensor([True, True])})
    for name in CENTRE_KEYS:
        getattr(first, name).merge_state(getattr(second, name))
    expected = {"test/box_dy": 0.0, "test/box_dx": 3.0, "test/box_center_err": (4.0 + 52 ** 0.5) / 2}
    for metrics in (together, first):
        values = {k: float(v) for k, v in metrics.compute().items() if k.split("/")[1] in CENTRE_KEYS}
        assert values == pytest.approx(expected, abs=1e-6)


def test_box_centre_error_scores_region_one_of_k():
    """k = 2 regions: region 1 (the most salient, the one iou_mean scores) is 1 px above and 5 px right of the
    object; region 2 lies elsewhere and does not count."""
    region1 = TRUTH + torch.tensor([-1.0, 5.0, -1.0, 5.0])
    region2 = torch.tensor([[40.0, 40.0, 48.0, 48.0]]).expand(3, 4)
    values = _box_values(SplitMetrics("val", 4, {}), torch.stack([region1, region2], dim=1), [True] * 3)
    assert values["val/box_dy"] == -1.0 and values["val/box_dx"] == 5.0
    assert values["val/box_center_err"] == pytest.approx(26 ** 0.5, abs=1e-6)
    iou = _box_values(SplitMetrics("val", 4, {}), region1, [True] * 3)["val/iou_mean"]
    assert values["val/iou_mean"] == pytest.approx(iou)


@pytest.mark.parametrize(("network_boxes", "batch"), [
    (True, {"box": TRUTH, "has_box": torch.tensor([False] * 3)}),
    (True, {}),
    (False, {"box": TRUTH, "has_box": torch.tensor([True] * 3)}),
], ids=["no-image-has-a-box", "batch-without-boxes", "network-without-boxes"])
def test_no_ground_truth_boxes_no_box_centre_error(network_boxes, batch):
    """As iou_mean: absent when no image of the split has a ground-truth box, and for a network without boxes."""
    metrics = SplitMetrics("val", 4, {})
    out = {"logits": torch.eye(4)[:3], **({"boxes_image": TRUTH + 1.0} if network_boxes else {})}
    metrics.update(out, torch.arange(3), torch.tensor(0.0), batch)
    names = {key.split("/")[1] for key in metrics.compute()}
    assert not names & {*CENTRE_KEYS, "iou_mean", "loc_acc@0.5"}, names
