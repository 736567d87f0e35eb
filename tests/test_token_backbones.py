"""Transformer backbones: the ViT family (class and register prefix tokens, rotary EVA) and Swin split exactly,
zoom at both levels in every interpolation mode, read class-token attention, refuse what they cannot run in one
line, and go through train, eval, predict, the figures and a sweep like a CNN."""

from __future__ import annotations

import csv
import json

import pytest
import timm
import torch

from fgzoom.errors import ConfigError
from fgzoom.models.backbone_split import split_backbone
from fgzoom.models.module import FGVCModule
from fgzoom.ops import AFFINE_MODES, MODES
from tests.helpers import run_script, run_script_here, tiny_overrides

# tiny builds of each family (timm accepts the architecture's arguments), and the input side each takes
TINY = {
    "deit_tiny_patch16_224": ({"depth": 3, "embed_dim": 32, "num_heads": 2, "patch_size": 8}, 32),
    "vit_small_patch14_reg4_dinov2": ({"depth": 3, "embed_dim": 32, "num_heads": 2, "patch_size": 8}, 32),
    "eva02_tiny_patch14_224": ({"depth": 3, "embed_dim": 32, "num_heads": 2, "patch_size": 8}, 32),
    "swin_tiny_patch4_window7_224": (
        {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 4}, 64),
}
SLICE_SETTINGS = [
    ("slice", mode, None, mode == "lanczos") for mode in MODES
] + [("slice", "bilinear", True, False), ("slice", "bicubic", True, True)]
AFFINE_SETTINGS = [("affine", mode, None, False) for mode in AFFINE_MODES] + [("affine", "bilinear", True, False)]


def _module(name: str, num_classes: int = 3, **zoom) -> tuple[FGVCModule, int]:
    kwargs, side = TINY[name]
    backbone = {"name": name, "img_size": side, "kwargs": kwargs}
    zoom = {"sampler": "slice", "box": "threshold", **zoom}
    return FGVCModule(backbone=backbone, num_classes=num_classes, zoom=zoom), side


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("stage", [-2, 0])
def test_split_equals_the_unsplit_model(name, stage):
    kwargs, side = TINY[name]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3, img_size=side, **kwargs).eval()
    split = split_backbone(model, stage, name=name).eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        f, context = split.forward_to(x)
        torch.testing.assert_close(split.forward_head(split.forward_from(f, context)), model(x), rtol=0, atol=1e-6)
    assert f.ndim == 4 and f.shape[1] == split.channels and f.shape[-1] == side // split.reduction
    prefix = getattr(model, "num_prefix_tokens", 0)
    assert (context is None) if prefix == 0 or name.startswith("swin") else context.shape == (2, prefix, f.shape[1])


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("level", ["feature", "image"])
@pytest.mark.parametrize("setting", SLICE_SETTINGS + AFFINE_SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_zoom_trains_and_predicts_at_both_levels_in_every_mode(name, level, setting):
    sampler, mode, align_corners, antialias = setting
    module, side = _module(name, level=level, sampler=sampler, mode=mode, align_corners=align_corners,
                           antialias=antialias)
    x, y = torch.randn(2, 3, side, side), torch.tensor([0, 2])
    module.train()
    out = module(x)
    loss = module.criterion(out, y)
    loss.backward()
    assert torch.isfinite(loss)
    first = next(module.net.split.model.parameters())
    assert first.grad is not None and torch.isfinite(first.grad).all()
    module.eval()
    with torch.no_grad():
        out = module(x, return_zoomed=True)
    assert out["logits"].shape == out["logits_zoom"].shape == (2, 3)
    assert out["boxes_image"].shape == (2, 4) and out["attention"].ndim == 3
    grid = out["zoomed"].shape[-2:]
    assert tuple(grid) == ((side, side) if level == "image" else tuple(module.net.split.forward_to(x)[0].shape[-2:]))


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "vit_small_patch14_reg4_dinov2", "eva02_tiny_patch14_224"])
def test_class_token_attention_is_a_distribution_over_the_patches(name):
    module, side = _module(name, attention="cls")
    module.eval()
    with torch.no_grad():
        out = module(torch.randn(2, 3, side, side))
    grid = side // 8
    assert out["attention"].shape == (2, grid, grid)
    assert "logits_attention" not in out  # no parameters, no auxiliary classifier
    # the raw maps are softmax columns: recompute them and check they sum with the prefix columns to one
    split = module.net.split
    f, context = split.forward_to(torch.randn(1, 3, side, side))
    _, maps = split.forward_from_attention(f, context)
    assert maps.shape == (1, 1, grid, grid) and maps.min() >= 0 and maps.sum() <= 1 + 1e-5


def test_class_token_attention_is_refused_where_there_is_no_class_token():
    with pytest.raises(ConfigError, match=r"^model.zoom.attention=cls: swin_tiny_patch4_window7_224 has no class token"):
        _module("swin_tiny_patch4_window7_224", attention="cls")


def test_swin_zoom_size_that_breaks_its_windows_names_model_zoom_size():
    with pytest.raises(ConfigError, match=r"^model.zoom.size=7: swin_tiny_patch4_window7_224 at level=feature needs"):
        _module("swin_tiny_patch4_window7_224", size=7)


def test_input_size_mismatch_of_a_fixed_size_model_names_both_keys():
    module, side = _module("deit_tiny_patch16_224")
    with pytest.raises(ConfigError, match=r"model.backbone.img_size=32: .* gets 48x48 images \(data.image_size"):
        module(torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("name", ["mixer_s16_224", "levit_128s", "crossvit_tiny_240", "beit_base_patch16_224"])
def test_a_family_that_cannot_be_split_is_one_line_at_build_time(name):
    with pytest.raises(ConfigError, match=rf"^model.backbone.name={name}: the zoom cannot split .* ViT family .* Swin"):
        FGVCModule(backbone={"name": name}, num_classes=3, zoom={})


def test_unsupported_family_from_the_command_line_is_one_line(tmp_path, synthetic_root):
    result = run_script_here("train.py", *tiny_overrides(synthetic_root), "model.backbone.name=mixer_s16_224",
                        "data.image_size=224", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: model.backbone.name=mixer_s16_224: the zoom cannot split"), result.stderr[-2000:]


def _cli_backbone(name: str) -> list[str]:
    kwargs, side = TINY[name]
    items = ",".join(f"{k}:{list(v) if isinstance(v, tuple) else v}".replace(" ", "") for k, v in kwargs.items())
    return [f"model.backbone.name={name}", f"model.backbone.kwargs={{{items}}}", f"data.image_size={side}"]


@pytest.mark.parametrize("name", ["vit_small_patch14_reg4_dinov2", "swin_tiny_patch4_window7_224"])
@pytest.mark.slow  # a whole train/eval through the scripts: CI runs the slow suite too
def test_train_eval_predict_figures_and_sweep_with_a_token_backbone(name, tmp_path, synthetic_root):
    run = tmp_path / "run"
    base = [*tiny_overrides(synthetic_root), *_cli_backbone(name)]
    result = run_script("train.py", *base, "callbacks.zoom_figures.num_images=2", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and sorted((run / "figures").glob("*.png"))
    trained = json.loads((run / "metrics.json").read_text())

    out = tmp_path / "eval"
    result = run_script("eval.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "trainer=cpu",
                        "eval.num_images=2", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"])  # the checkpoint reloads exactly
    assert sorted(out.rglob("*.png"))  # confusion matrix and the attention/box grid

    images = sorted((synthetic_root / "test").rglob("*.png"))[:3]
    folder = tmp_path / "images"
    folder.mkdir()
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    pred = tmp_path / "pred"
    result = run_script("predict.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"input={folder}",
                        f"hydra.run.dir={pred}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((pred / "predictions.csv").open()))
    assert len(rows) == 3

    sweep = tmp_path / "sweep"
    result = run_script("train.py", "-m", "experiment=ablate_interp", "hydra/launcher=basic",
                        "model.zoom.level=feature,image", "model.zoom.mode=nearest", "model.zoom.align_corners=null",
                        "model.zoom.antialias=false", "seed=1", f"hydra.sweep.dir={sweep}",
                        *base, "trainer.limit_train_batches=2", "++figures_every_n_epochs=0")
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_script("summarize.py", str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert sorted((r["level"], r["mode"], r["status"]) for r in rows) == [("feature", "nearest", "ok"),
                                                                          ("image", "nearest", "ok")]
