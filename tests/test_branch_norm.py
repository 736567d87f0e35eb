"""BatchNorm statistics per branch (``model.zoom.norm_stats``): the zoomed views' pass keeps its own running
statistics, so evaluation normalises each branch with the statistics it was trained with."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fgzoom.errors import ConfigError
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.branch_norm import BranchStats
from fgzoom.models.module import FGVCModule
from fgzoom.models.zoom import ZoomNet
from fgzoom.models.zoom_config import ZoomConfig

# fixed boxes (no random theta, no warm-up) so a training-mode and an eval-mode call crop the same regions
FIXED_BOXES = {"threshold_range": None, "box_warmup": 0.0}


def zoom_net(level: str = "feature", norm_stats: str = "branch", **zoom) -> ZoomNet:
    torch.manual_seed(0)
    net = ZoomNet(BackboneConfig("resnet10t"), ZoomConfig(level=level, norm_stats=norm_stats, **FIXED_BOXES, **zoom),
                  num_classes=5)
    net.progress = 1.0
    return net


def batch() -> torch.Tensor:
    """Images whose zoomed views look unlike the whole frame: a bright square in a dark, noisy frame."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 64, 64, generator=g) * 0.1 - 1.0
    for i in range(16):
        r, c = torch.randint(0, 40, (2,), generator=g).tolist()
        x[i, :, r:r + 20, c:c + 20] += 3.0 + torch.randn(3, 20, 20, generator=g)
    return x


def bn_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k}


@pytest.mark.parametrize("level", ["feature", "image"])
def test_zoom_pass_updates_only_its_own_statistics(level):
    net = zoom_net(level)
    layers = net.branch_stats.norms
    tail = net.split.tail_modules() if level == "feature" else [net.split]
    assert len(layers) == sum(isinstance(m, nn.BatchNorm2d) for t in tail for m in t.modules()) > 0
    if level == "feature":  # the stages before the cut see the raw view only: no second set there
        assert not hasattr(net.split.model.conv1[1], "zoom_running_mean")
    x = batch()
    with torch.no_grad():
        net.train()
        net.split.forward_head(net.split.forward_from(*net.split.forward_to(x)))  # the raw pass alone
    after_raw = bn_state(net)
    for bn in layers:  # the raw pass moved the raw statistics, not the zoom ones
        assert not torch.equal(bn.running_mean, bn.zoom_running_mean)
    with torch.no_grad():
        net(x)
    after_both = bn_state(net)
    zoom_keys = [k for k in after_both if ".zoom_running" in k]
    assert zoom_keys and all(not torch.equal(after_raw[k], after_both[k]) for k in zoom_keys)


@pytest.mark.parametrize("level", ["feature", "image"])
def test_eval_normalises_each_branch_as_training_did(level):
    """With momentum 1 the running statistics are the last training batch's: evaluating that batch must then
    give (nearly: the running variance is the unbiased one) the training-mode logits of both branches. One
    shared set cannot: it holds the zoom pass's statistics, not the raw pass's."""
    errors = {}
    for norm_stats in ("branch", "shared"):
        net = zoom_net(level, norm_stats)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 1.0
        x = batch()
        with torch.no_grad():
            train_out = net.train()(x)
            eval_out = net.eval()(x)
        if norm_stats == "branch":  # the same crops, to a twentieth of a pixel (shared: even the attention moves)
            assert torch.allclose(train_out["boxes"], eval_out["boxes"], atol=0.05)
        errors[norm_stats] = max(
            (train_out[k] - eval_out[k]).abs().max().item() / train_out[k].abs().max().item()
            for k in ("logits_raw", "logits_zoom")
        )
    assert errors["branch"] < 0.05
    assert errors["shared"] > 5 * errors["branch"]


def test_recomputation_under_grad_checkpointing_uses_the_zoom_statistics():
    """The checkpointed tail of the zoom pass is recomputed in backward, after the pass has swapped its
    statistics back: the recomputation must update the zoom set again, never the raw one. With momentum 1 a
    repeated update of the right set is idempotent, so the buffers after backward equal those after forward."""
    net = zoom_net("feature")
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    net.set_grad_checkpointing(True)
    net.train()
    out = net(batch())
    after_forward = bn_state(net)
    out["logits"].sum().backward()
    after_backward = bn_state(net)
    for key, value in after_forward.items():
        assert torch.allclose(value, after_backward[key], atol=1e-6), key


def test_shared_statistics_register_nothing_and_bad_value_is_one_line():
    net = zoom_net(norm_stats="shared")
    assert net.branch_stats is None
    assert not any("zoom_running" in k for k in net.state_dict())
    with pytest.raises(ConfigError, match=r"model\.zoom\.norm_stats"):
        ZoomConfig(norm_stats="per_branch")


def test_zoom_statistics_start_from_the_loaded_statistics():
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(0.5)
    BranchStats([bn])
    assert torch.equal(bn.zoom_running_mean, bn.running_mean)
    assert bn.zoom_running_mean.data_ptr() != bn.running_mean.data_ptr()


def test_a_state_dict_without_zoom_statistics_loads_as_shared_statistics():
    """Checkpoints from before ``norm_stats`` hold one set: it becomes both, which is what they were evaluated with."""
    module = FGVCModule(backbone=BackboneConfig("resnet10t"), num_classes=5, zoom=ZoomConfig(**FIXED_BOXES))
    state = {k: v for k, v in module.state_dict().items() if ".zoom_running" not in k and "zoom_num_batches" not in k}
    for k in state:
        if k.endswith("running_mean"):
            state[k] = torch.full_like(state[k], 0.25)
    checkpoint = {"state_dict": state, "fgzoom": {"progress": 1.0}}
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])  # strict: every key is there
    for bn in module.net.branch_stats.norms:
        assert torch.equal(bn.zoom_running_mean, bn.running_mean)
        assert bn.running_mean.eq(0.25).all()
