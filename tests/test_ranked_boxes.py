"""Ranked boxes (``model.zoom.box=ranked``): candidate boxes from the attention (``fgzoom.ops.proposals``)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou, nms

from fgzoom.ops.proposals import (
    attention_peaks,
    attention_proposals,
    greedy_nms,
    pairwise_box_iou,
    peak_boxes,
)


def _spread_maps(b: int = 2, m: int = 8, h: int = 8, w: int = 8) -> torch.Tensor:
    """M maps per sample, each one hot cell, the cells far apart (so their boxes are distinct)."""
    maps = torch.zeros(b, m, h, w)
    cells = [(0, 0), (0, 7), (7, 0), (7, 7), (3, 3), (0, 4), (7, 4), (4, 0)]
    for j in range(m):
        y, x = cells[j % len(cells)]
        maps[:, j, y, x] = 1.0 + 0.1 * j
    return maps


# ----------------------------------------------------------------------------------------------- candidates
def test_pairwise_iou_is_torchvisions_box_iou_per_sample():
    torch.manual_seed(0)
    lo = torch.rand(3, 5, 2) * 40
    a = torch.cat([lo, lo + 1 + torch.rand(3, 5, 2) * 20], dim=-1)
    lo = torch.rand(3, 4, 2) * 40
    b = torch.cat([lo, lo + 1 + torch.rand(3, 4, 2) * 20], dim=-1)
    xy = [1, 0, 3, 2]  # torchvision's (x0, y0, x1, y1)
    expected = torch.stack([box_iou(a[i][:, xy], b[i][:, xy]) for i in range(3)])
    torch.testing.assert_close(pairwise_box_iou(a, b), expected)


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.7])
def test_greedy_nms_keeps_what_torchvisions_nms_keeps(threshold):
    """The reference: torchvision's nms, per sample, with scores falling in the order given."""
    torch.manual_seed(1)
    lo = torch.rand(4, 20, 2) * 30
    boxes = torch.cat([lo, lo + 4 + torch.rand(4, 20, 2) * 20], dim=-1)
    keep = greedy_nms(boxes, threshold)
    scores = torch.arange(20, 0, -1).float()
    for i in range(4):
        expected = torch.zeros(20, dtype=torch.bool)
        expected[nms(boxes[i][:, [1, 0, 3, 2]], scores, threshold)] = True
        assert torch.equal(keep[i], expected), i


def test_candidates_have_the_count_lie_in_the_frame_and_are_distinct():
    torch.manual_seed(0)
    boxes, degenerate = attention_proposals(_spread_maps(), (64, 48), [0.25, 0.4], count=10, iou_threshold=0.4)
    assert boxes.shape == (2, 10, 4) and boxes.dtype == torch.float32 and not degenerate.any()
    assert (boxes[..., :2] >= 0).all() and (boxes[..., 2] <= 64).all() and (boxes[..., 3] <= 48).all()
    assert (boxes[..., 2:] > boxes[..., :2]).all()
    sides = boxes[..., 2:] - boxes[..., :2]  # every box one of the scales, kept whole at the border (slid)
    assert all(any(torch.allclose(s, torch.tensor([f * 64, f * 48])) for f in (0.25, 0.4)) for s in sides.view(-1, 2))
    iou = pairwise_box_iou(boxes, boxes)
    off_diagonal = ~torch.eye(10, dtype=torch.bool)
    assert (iou[:, off_diagonal] <= 0.4 + 1e-6).all()  # 9 peaks x 2 scales: enough distinct ones for 10


@pytest.mark.parametrize("offset", [(0.0, 0.0), (0.25, -0.25), (-0.5, 0.5)])
def test_the_first_candidate_is_centred_on_the_peak_cells_receptive_field(offset):
    """A map with one hot cell: the first candidate is centred where the cell offset puts that cell in the image,
    ``(i + 0.5 + delta) * H / h``."""
    maps = torch.zeros(1, 3, 8, 8)
    maps[:, :, 2, 5] = 1.0
    boxes, _ = attention_proposals(maps, (64, 64), [0.25], count=4, offset=offset)
    centre = (boxes[0, 0, :2] + boxes[0, 0, 2:]) / 2
    expected = torch.tensor([(2 + 0.5 + offset[0]) * 8, (5 + 0.5 + offset[1]) * 8])
    torch.testing.assert_close(centre, expected)
    torch.testing.assert_close(boxes[0, 0, 2:] - boxes[0, 0, :2], torch.tensor([16.0, 16.0]))


def test_peaks_prefer_local_maxima_and_the_middle_of_a_flat_map():
    m = torch.zeros(2, 5, 5)
    m[0, 1, 1], m[0, 1, 2], m[0, 4, 4] = 1.0, 0.9, 0.5  # (1, 2) is high but no local maximum
    cells, degenerate = attention_peaks(m, 2)
    assert cells[0].tolist() == [1 * 5 + 1, 4 * 5 + 4] and not degenerate[0]
    assert cells[1, 0].item() == 2 * 5 + 2 and degenerate[1]  # flat: the middle cell first


def test_peak_boxes_slide_inside_the_frame_keeping_their_side():
    centres = torch.tensor([[[1.0, 60.0], [32.0, 32.0]]])
    boxes = peak_boxes(centres, [0.5], (64, 64))
    assert boxes.tolist() == [[[0.0, 32.0, 32.0, 64.0], [16.0, 16.0, 48.0, 48.0]]]


def test_a_pool_smaller_than_the_count_repeats_itself():
    boxes, _ = attention_proposals(torch.rand(2, 1, 1, 1), (16, 16), [0.5], count=3)
    assert boxes.shape == (2, 3, 4) and torch.equal(boxes[:, 0], boxes[:, 1])


def test_proposals_read_no_tensor_value(monkeypatch):
    """Batched end to end: no host read (a device sync on CUDA) in proposing or suppressing."""
    maps = torch.rand(3, 4, 6, 6)

    def forbidden(*args, **kwargs):
        raise AssertionError("a proposal function read a tensor value back to the host")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
            m.setattr(torch.Tensor, name, forbidden)
        attention_proposals(maps, (48, 48), [0.3, 0.5], count=8, offset=(0.2, -0.1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scales": []}, "scales=\\[\\]: must be a non-empty list"),
        ({"scales": [0.0]}, "scales=\\[0.0\\]"),
        ({"count": 0}, "count=0: must be an int >= 1"),
        ({"iou_threshold": 0.0}, "iou_threshold=0.0"),
        ({"grid": (0, 4)}, "grid=\\(0, 4\\)"),
    ],
)
def test_proposal_errors_name_the_argument(kwargs, match):
    args = {"maps": torch.rand(1, 2, 4, 4), "grid": (16, 16), "scales": [0.5], "count": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        attention_proposals(**args)
