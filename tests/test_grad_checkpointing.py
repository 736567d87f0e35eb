"""model.grad_checkpointing: the same gradients as without it, for CNN, ViT and Swin backbones, plain and zoom at
both levels; a bad value is one line; a short run works from the command line."""

from __future__ import annotations

import pytest
import torch

from fgzoom.errors import ConfigError
from fgzoom.models.module import FGVCModule
from tests.helpers import run_script, tiny_overrides

VIT = {"name": "deit_tiny_patch16_224", "img_size": 32,
       "kwargs": {"depth": 3, "embed_dim": 32, "num_heads": 2, "patch_size": 8}}
SWIN = {"name": "swin_tiny_patch4_window7_224", "img_size": 64,
        "kwargs": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4}}
CASES = [
    ("resnet18", {"name": "resnet18"}, 64, {"level": "feature"}),
    ("resnet18-image", {"name": "resnet18"}, 64, {"level": "image"}),
    ("resnet18-plain", {"name": "resnet18"}, 64, None),
    ("convnext", {"name": "convnext_atto"}, 64, {"level": "feature"}),
    ("deit", VIT, 32, {"level": "feature"}),
    ("deit-image", VIT, 32, {"level": "image"}),
    ("swin", SWIN, 64, {"level": "feature"}),
]


def _grads(backbone, side, zoom, checkpointing):
    torch.manual_seed(0)
    module = FGVCModule(backbone=backbone, num_classes=3, zoom=zoom, grad_checkpointing=checkpointing).eval()
    x, y = torch.randn(2, 3, side, side), torch.tensor([0, 2])
    module.criterion(module(x), y).backward()  # eval mode: BatchNorm statistics fixed, so both runs compute alike
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("case", "backbone", "side", "zoom"), CASES, ids=[c[0] for c in CASES])
def test_checkpointing_gives_the_same_gradients(case, backbone, side, zoom):
    plain, checkpointed = _grads(backbone, side, zoom, False), _grads(backbone, side, zoom, True)
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_checkpointing_recomputes_the_stages_of_the_split():
    calls = []
    module = FGVCModule(backbone={"name": "resnet18"}, num_classes=3, zoom={}, grad_checkpointing=True)
    module.net.split.model.layer4.register_forward_pre_hook(lambda *args: calls.append(1))
    module(torch.randn(2, 3, 64, 64))["logits"].sum().backward()
    assert len(calls) == 4  # raw + zoomed pass, each started again in backward (the recompute stops early)


def test_a_bad_value_is_one_line():
    with pytest.raises(ConfigError, match=r"^model.grad_checkpointing='yes': must be true or false"):
        FGVCModule(backbone={"name": "resnet18"}, num_classes=3, grad_checkpointing="yes")


@pytest.mark.slow  # a whole train/eval through the scripts: CI runs the slow suite too
def test_short_run_from_the_command_line(tmp_path, synthetic_root):
    result = run_script("train.py", *tiny_overrides(synthetic_root), "model.grad_checkpointing=true",
                        "trainer.limit_train_batches=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
