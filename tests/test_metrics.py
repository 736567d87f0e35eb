"""SplitMetrics: every logged accuracy is its own number, whatever the first batch looked like."""

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
