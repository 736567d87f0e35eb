"""Ranked boxes (``model.zoom.box=ranked``): candidate boxes from the attention (``fgzoom.ops.proposals``), the
score head and its ranking loss (``fgzoom.models.ranked_box``), the top-k selection in ``ZoomNet``, training at
both levels and in two steps, evaluation and prediction of a ranked checkpoint, the figures and the config
errors."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou, nms

from fgzoom.cli.evaluate import evaluate
from fgzoom.cli.export import export_model
from fgzoom.cli.predict import predict
from fgzoom.cli.train import train
from fgzoom.errors import ConfigError
from fgzoom.eval.figures import CANDIDATE_COLOR, grid_data, grid_figure
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.loss import FGVCLoss
from fgzoom.models.module import FGVCModule
from fgzoom.models.ranked_box import ProposalScorer, probe_order, proposal_ranking_loss
from fgzoom.models.zoom import ZoomNet, evaluating
from fgzoom.models.zoom_config import ZoomConfig
from fgzoom.ops.proposals import (
    attention_peaks,
    attention_proposals,
    greedy_nms,
    pairwise_box_iou,
    peak_boxes,
    peak_centres,
)
from tests.helpers import compose_config, tiny_overrides

RANKED = ZoomConfig(box="ranked")


def _net(config: ZoomConfig = RANKED, num_classes: int = 4, **kwargs) -> ZoomNet:
    torch.manual_seed(0)
    return ZoomNet(BackboneConfig(name="resnet10t"), config, num_classes, **kwargs)


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


def test_peak_centres_are_sub_cell():
    m = torch.zeros(3, 6, 6)
    m[0, 2, 2] = 1.0  # one cell: its centre
    m[1, 2, 2] = m[1, 2, 3] = 1.0  # two equal cells: their shared edge
    m[2, 0, 0], m[2, 1, 0] = 1.0, 0.5  # at the frame's corner: the cells outside do not count
    cells = torch.tensor([[2 * 6 + 2], [2 * 6 + 2], [0]])
    torch.testing.assert_close(peak_centres(m, cells)[:, 0], torch.tensor([[2.5, 2.5], [2.5, 3.0], [0.5 + 0.5 / 1.5, 0.5]]))


def test_a_peak_between_two_cells_centres_its_candidates_between_them():
    """The sub-cell centre goes through the cell offset like a cell centre: between the two cells' image centres."""
    maps = torch.zeros(1, 2, 8, 8)
    maps[:, :, 4, 2] = maps[:, :, 4, 3] = 1.0
    boxes, _ = attention_proposals(maps, (64, 64), [0.25], count=2, offset=(0.25, 0.25))
    centre = (boxes[0, 0, :2] + boxes[0, 0, 2:]) / 2
    torch.testing.assert_close(centre, torch.tensor([(4.5 + 0.25) * 8, (3.0 + 0.25) * 8]))


def test_peak_boxes_slide_inside_the_frame_keeping_their_side():
    centres = torch.tensor([[[1.0, 60.0], [32.0, 32.0]]])
    boxes = peak_boxes(centres, [0.5], (64, 64))
    assert boxes.tolist() == [[[0.0, 32.0, 32.0, 64.0], [16.0, 16.0, 48.0, 48.0]]]


def test_a_pool_smaller_than_the_count_repeats_itself():
    boxes, _ = attention_proposals(torch.rand(2, 1, 1, 1), (16, 16), [0.5], count=3)
    assert boxes.shape == (2, 3, 4) and torch.equal(boxes[:, 0], boxes[:, 1])


def test_proposals_read_no_tensor_value(monkeypatch):
    """Batched end to end: no host read (a device sync on CUDA) in proposing, suppressing or scoring."""
    maps, features = torch.rand(3, 4, 6, 6), torch.rand(3, 8, 6, 6)

    def forbidden(*args, **kwargs):
        raise AssertionError("a proposal function read a tensor value back to the host")

    scorer = ProposalScorer(8)
    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
            m.setattr(torch.Tensor, name, forbidden)
        boxes, _ = attention_proposals(maps, (48, 48), [0.3, 0.5], count=8, offset=(0.2, -0.1))
        scores = scorer(features, boxes / 8)
        probe_order(scores, 2, 4)


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


# ----------------------------------------------------------------------------------------- scores and loss
def test_ranking_loss_is_lower_for_scores_in_the_targets_order():
    logits = torch.zeros(2, 4, 3)
    logits[:, :, 1] = torch.tensor([3.0, 1.0, 0.0, -2.0])  # true class 1: candidate 0 best, 3 worst
    labels = torch.tensor([1, 1])
    ordered = torch.tensor([[4.0, 3.0, 2.0, 1.0]] * 2)
    assert proposal_ranking_loss(ordered, logits, labels, margin=0.5) == 0  # ordered with margin: no loss
    reversed_ = ordered.flip(1)
    assert proposal_ranking_loss(reversed_, logits, labels, 0.5) > proposal_ranking_loss(ordered, logits, labels, 1.5) > 0
    # equal targets give no pair
    assert proposal_ranking_loss(ordered, torch.zeros(2, 4, 3), labels, 1.0) == 0


def test_ranking_loss_gradient_raises_the_better_candidates_score():
    logits = torch.zeros(1, 2, 2)
    logits[0, 0, 0] = 2.0  # candidate 0 more confident in class 0
    scores = torch.zeros(1, 2, requires_grad=True)
    proposal_ranking_loss(scores, logits, torch.tensor([0]), 1.0).backward()
    assert scores.grad[0, 0] < 0 < scores.grad[0, 1]  # descent raises s_0, lowers s_1


def test_probe_order_puts_the_top_k_first_then_distinct_others():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.2, 0.3]] * 3)
    index = probe_order(scores, k=2, probes=5)
    assert index[:, :2].tolist() == [[1, 3]] * 3
    assert all(len(set(row)) == 5 for row in index.tolist())


def test_scorer_reads_the_features_inside_each_box():
    torch.manual_seed(0)
    scorer = ProposalScorer(3)
    features = torch.zeros(1, 3, 8, 8)
    features[:, :, :4, :4] = 5.0
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 4.0], [4.0, 4.0, 8.0, 8.0], [0.0, 0.0, 4.0, 4.0]]])
    scores = scorer(features, boxes)
    assert scores.shape == (1, 3) and scores[0, 0] == scores[0, 2] and scores[0, 0] != scores[0, 1]


class _FixedScores(nn.Module):
    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(boxes.shape[0], -1)


@pytest.mark.parametrize("level", ["feature", "image"])
def test_the_top_k_candidates_by_score_are_zoomed(level):
    net = _net(dataclasses.replace(RANKED, level=level, num_regions=2, candidates=6)).eval()
    net.proposal_scorer = _FixedScores(torch.tensor([[0.0, 1.0, -1.0, 3.0, 2.0, 0.5]]))
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    assert out["candidates"].shape == (2, 6, 4) and out["candidate_scores"].shape == (2, 6)
    torch.testing.assert_close(out["boxes_image"], out["candidates"][:, [3, 4]])  # best first
    assert "rank_scores" not in out  # no targets at evaluation


def test_the_ranking_loss_trains_the_score_head_only():
    """Features are detached for the head and the candidates come from detached maps: the rank term's gradient
    reaches the score head and nothing else."""
    net = _net().train()
    out = net(torch.randn(3, 3, 64, 64))
    assert not out["candidates"].requires_grad and not out["boxes"].requires_grad
    assert out["rank_scores"].shape == (3, 1, 4) and out["rank_logits"].shape == (3, 1, 4, 4)
    assert not out["rank_logits"].requires_grad
    only_rank = {name: 0.0 for name in ("raw", "zoom", "attention")}
    loss = FGVCLoss({**only_rank, "rank": 1.0}, 4, proposal_margin=net.proposal_margin)(out, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss > 0
    head = {name for name, _ in net.proposal_scorer.named_parameters(prefix="proposal_scorer")}
    moved = {name for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved <= head  # the output bias shifts every score alike: a pairwise loss gives it no gradient
    assert {"proposal_scorer.hidden.weight", "proposal_scorer.out.weight"} <= moved


def test_rank_weight_zero_and_evaluation_add_no_ranking_term():
    net = _net().train()
    out = net(torch.randn(2, 3, 64, 64))
    labels = torch.tensor([0, 1])
    with_rank = FGVCLoss({"rank": 1.0}, 4, proposal_margin=net.proposal_margin)(out, labels)
    without = FGVCLoss({"rank": 0.0}, 4, proposal_margin=net.proposal_margin)(out, labels)
    stripped = {k: v for k, v in out.items() if not k.startswith("rank_")}
    assert with_rank >= without
    torch.testing.assert_close(without, FGVCLoss({"rank": 1.0}, 4, proposal_margin=0.05)(stripped, labels))


def test_the_probe_reads_running_statistics_without_moving_them():
    net = _net().train()
    norms = [m for m in net.split.tail_modules()[0].modules() if isinstance(m, nn.BatchNorm2d)]
    before = [(bn.running_mean.clone(), bn.zoom_running_mean.clone()) for bn in norms]
    f = torch.randn(2, net.split.channels, 4, 4)
    boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 4.0]]] * 2)
    logits = net._probe(f, boxes, (4, 4))
    assert logits.shape == (2, 2, 4) and not logits.requires_grad
    for bn, (raw, zoom) in zip(norms, before, strict=True):
        assert torch.equal(bn.running_mean, raw) and torch.equal(bn.zoom_running_mean, zoom)
    assert all(m.training for m in net.modules())  # the mode of every layer is back


def test_evaluating_restores_mixed_modes():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model[1].eval()
    with evaluating([model]):
        assert not any(m.training for m in model.modules())
    assert model.training and model[0].training and not model[1].training


# --------------------------------------------------------------------------------------- the network at work
@pytest.mark.parametrize(
    "change",
    [{"level": "feature", "sampler": "slice"}, {"level": "image", "sampler": "grid_sample"},
     {"level": "feature", "num_regions": 3}, {"attention": "channel_sum"}],
    ids=["feature-slice", "image-grid_sample", "regions=3", "channel_sum"],
)
def test_ranked_boxes_work_with_every_sampler_level_and_attention(change):
    net = _net(dataclasses.replace(RANKED, **change)).train()
    out = net(torch.randn(2, 3, 64, 64))
    k = change.get("num_regions", 1)
    boxes = out["boxes_image"].view(2, k, 4)
    assert ((boxes >= 0) & (boxes <= 64)).all()
    if change.get("sampler") == "slice":
        assert out["boxes"].dtype == torch.int64
    FGVCLoss(None, 4, proposal_margin=net.proposal_margin)(out, torch.tensor([0, 1])).backward()
    assert net.proposal_scorer.out.weight.grad is not None


def test_two_steps_rank_each_step_and_nest_them():
    net = _net(dataclasses.replace(RANKED, level="image", steps=2, min_size=0.0, box_warmup=0.0),
               input_size=32).train()
    out = net(torch.randn(2, 3, 64, 64))
    assert out["rank_scores"].shape == (2, 2, 4) and out["rank_logits"].shape == (2, 2, 4, 4)
    boxes = out["boxes_steps"]  # [B, 2, 4] on the 64 px source
    assert (boxes[:, 1, :2] >= boxes[:, 0, :2] - 1e-4).all() and (boxes[:, 1, 2:] <= boxes[:, 0, 2:] + 1e-4).all()
    assert out["candidates"].shape == (2, 12, 4)
    chosen = out["candidates"].gather(1, out["candidate_scores"].argmax(1)[:, None, None].expand(-1, 1, 4))[:, 0]
    torch.testing.assert_close(boxes[:, 0], chosen)  # step 1 is the best candidate of the source frame
    FGVCLoss(None, 4, proposal_margin=net.proposal_margin)(out, torch.tensor([0, 1])).backward()


def test_other_rules_have_no_score_head_and_unchanged_state_keys():
    default = _net(ZoomConfig())
    assert default.proposal_scorer is None and not any("proposal_scorer" in k for k in default.state_dict())
    ranked = _net()
    extra = {k for k in ranked.state_dict() if k not in default.state_dict()}
    assert extra and all(k.startswith("proposal_scorer.") for k in extra)


def test_ranked_module_round_trips_through_its_saved_state():
    module = FGVCModule(backbone={"name": "resnet10t"}, num_classes=4, zoom={"box": "ranked", "candidates": 8})
    copy = FGVCModule.from_saved(module.hparams, module.state_dict())
    x = torch.randn(2, 3, 64, 64)
    module.eval(), copy.eval()
    with torch.no_grad():
        a, b = module(x), copy(x)
    torch.testing.assert_close(a["candidate_scores"], b["candidate_scores"])
    torch.testing.assert_close(a["logits"], b["logits"])


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=pytest.mark.slow), pytest.param("torchscript", marks=pytest.mark.slow)])  # 9-30 s
def test_a_ranked_model_exports(fmt, tmp_path):
    """The whole ranked network (proposals, suppression loop, roi_align, top-k) through scripts/export.py's
    export_model, with a dynamic batch, verified against PyTorch on another batch size."""
    if fmt == "onnx":
        for package in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(package)
    module = FGVCModule(backbone={"name": "resnet10t"}, num_classes=4, zoom={"box": "ranked", "candidates": 6})
    result = export_model(module, tmp_path / f"ranked.{fmt}", fmt, image_size=64)
    assert result["max_abs_error"] is not None and result["max_abs_error"] < 1e-4


# ------------------------------------------------------------------------------------------------- figures
def test_figure_draws_the_candidates_thin_with_their_scores():
    net = _net(dataclasses.replace(RANKED, candidates=5, candidate_scales=(0.3,)))
    data = grid_data(net, {"image": torch.randn(2, 3, 64, 64), "label": torch.tensor([0, 1])})
    assert data.candidates.shape == (2, 5, 4) and data.candidate_scores.shape == (2, 5)
    figure = grid_figure(data, ["a", "b", "c", "d"], [0.5] * 3, [0.25] * 3)
    ax = figure.axes[0]
    thin = [p for p in ax.patches if p.get_edgecolor()[:3] == (1.0, 1.0, 1.0) and p.get_linewidth() < 1.0]
    distinct = {tuple(round(v, 3) for v in box) for box in data.candidates[0].tolist()}
    assert len(thin) == len(distinct)
    texts = {t.get_text() for t in ax.texts}
    assert {f"{s:.2f}" for s in data.candidate_scores[0].tolist()} <= texts
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "candidates (score)" in labels and CANDIDATE_COLOR == "white"
    assert max(p.get_linewidth() for p in ax.patches) > 1.0  # the chosen box, thick
    plain = grid_data(_net(ZoomConfig()), {"image": torch.randn(1, 3, 64, 64)})
    assert plain.candidates is None  # the other rules' figures are as before


# -------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_regions": 13}, "model.zoom.num_regions=13: box=ranked zooms the best num_regions of "
                              "model.zoom.candidates=12"),
        ({"candidates": 0}, "model.zoom.candidates=0: must be an int >= 1"),
        ({"candidate_scales": ()}, "model.zoom.candidate_scales=\\(\\): must be a non-empty list"),
        ({"candidate_scales": [0.5, 1.5]}, "model.zoom.candidate_scales=\\(0.5, 1.5\\)"),
        ({"candidate_iou": 0.0}, "model.zoom.candidate_iou=0.0: must be in \\(0, 1\\]"),
        ({"probes": 1}, "model.zoom.probes=1: must be an int in \\[2, model.zoom.candidates=12\\] \\(the ranking"),
        ({"probes": 13}, "model.zoom.probes=13"),
        ({"probe_size": 0.0}, "model.zoom.probe_size=0.0: must be in \\(0, 1\\]"),
        ({"steps": 2}, "model.zoom.steps=2: a recursive zoom needs model.zoom.level=image"),
    ],
)
def test_ranked_config_errors_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(RANKED, **change)


def test_ranked_keys_are_checked_alone_for_the_other_rules():
    ZoomConfig(candidates=3)  # probes=4 > candidates matters only to box=ranked
    with pytest.raises(ConfigError, match="model.zoom.probes=1: must be an int >= 2$"):
        ZoomConfig(probes=1)


def test_every_sampler_and_level_combination_is_a_valid_ranked_config():
    for level, sampler in itertools.product(("feature", "image"), ("continuous", "slice", "grid_sample")):
        ZoomConfig(box="ranked", level=level, sampler=sampler)
    ZoomConfig(box="ranked", level="image", steps=3)


# ------------------------------------------------------------------------------------- training end to end
def _overrides(synthetic_root, *extra: str) -> list[str]:
    tiny = [o for o in tiny_overrides(synthetic_root) if not o.startswith("callbacks.")]
    return [*tiny, "model.zoom.box=ranked", "model.zoom.candidates=6", *extra]


@pytest.mark.parametrize(
    "extra",
    [(), ("model.zoom.level=image",), ("model=zoom_image", "model.input_size=32")],
    ids=["feature", "image", "image-steps=2"],
)
def test_fast_dev_run_trains_ranked_boxes(extra, tmp_path, synthetic_root):
    metrics = train(compose_config("train.yaml", [*_overrides(synthetic_root, *extra), "debug=fast"], tmp_path))
    assert {"test/acc_zoom", "test/iou_mean", "val/loc_acc@0.5"} <= set(metrics)


@pytest.fixture(scope="module")
def ranked_run(tmp_path_factory, synthetic_root):
    """A ranked zoom model trained one tiny epoch; returns its run folder."""
    run = tmp_path_factory.mktemp("ranked") / "run"
    overrides = [*tiny_overrides(synthetic_root), "test=false", "logger=none", "callbacks.zoom_figures.num_images=4",
                 "model.zoom.box=ranked", "model.zoom.candidates=6", "model.zoom.num_regions=2"]
    train(compose_config("train.yaml", overrides, run))
    return run


@pytest.mark.slow  # a whole train, eval and predict: CI runs the slow suite too
def test_eval_and_predict_a_ranked_checkpoint(ranked_run, synthetic_root, tmp_path):
    assert (ranked_run / "figures" / "epoch000.png").stat().st_size > 0
    ckpt = ranked_run / "checkpoints" / "last.ckpt"
    metrics = evaluate(compose_config(
        "eval.yaml", [f"ckpt_path={ckpt}", "trainer=cpu", "logger=none", "eval.num_images=4"], tmp_path / "eval"))
    for key in ("acc", "acc_zoom", "iou_mean", "loc_acc@0.5"):
        assert 0.0 <= metrics[f"test/{key}"] <= 1.0, key
    assert (tmp_path / "eval" / "figures" / "eval_grid.png").stat().st_size > 0
    cfg = compose_config("predict.yaml", [f"ckpt_path={ckpt}", f"input={synthetic_root / 'test'}", "num_workers=0",
                                          "figures=true"], tmp_path / "predict")
    rows = predict(cfg).read_text().splitlines()
    assert len(rows) > 1 and rows[0].endswith("box2_x1")  # both chosen regions in the CSV
    assert len(list((tmp_path / "predict" / "figures").glob("*.png"))) == len(rows) - 1
