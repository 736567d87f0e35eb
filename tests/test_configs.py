"""Every config in configs/ composes and passes the start-up checks; every model config builds a network that runs."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import CONFIGS, compose_config, tiny_overrides

GROUP_OPTIONS = {
    group: sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
    for group in ("data", "model", "trainer", "callbacks", "logger", "debug", "experiment")
}


def _group_override(group: str, option: str, root: Path) -> list[str]:
    if group == "experiment":
        return [f"experiment={option}"]
    if group == "debug":
        return [f"debug={option}"]
    if group == "data" and option not in ("synthetic",):
        return [f"data={option}", f"data.root={root}"]
    return [f"{group}={option}"]


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts], ids=lambda v: str(v)
)
def test_train_config_with_every_group_option_passes_the_start_up_checks(group, option, tmp_path):
    from fgzoom.runtime import validate_config

    cfg = compose_config("train.yaml", _group_override(group, option, tmp_path), tmp_path)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # no ??? left, every ${} resolves
    validate_config(cfg)  # the typed model configs accept every key and value the option sets


def test_eval_config_falls_back_to_the_checkpoint_data(tmp_path):
    cfg = compose_config("eval.yaml", ["ckpt_path=/x.ckpt"], tmp_path)
    assert cfg.get("data") is None  # eval reads the data config saved in the checkpoint unless data= is given


# every model option, sub-folders included (model=interp/feature/bilinear, model=boxes/learned, ...)
MODEL_OPTIONS = sorted(
    str(p.relative_to(CONFIGS / "model").with_suffix("")) for p in (CONFIGS / "model").glob("**/*.yaml")
)


def test_model_options_include_the_sub_folders():
    assert {m.split("/")[0] for m in MODEL_OPTIONS} >= {"interp", "boxes", "plain", "zoom"}


@pytest.mark.parametrize("model", MODEL_OPTIONS)
def test_every_model_config_builds_a_network_that_runs(model, tmp_path, synthetic_root):
    """Each configs/model/**.yaml instantiates (an invalid combination, e.g. sampler=affine with mode=area,
    raises ConfigError) and the network it builds runs a batch with the zoom its file name promises."""
    cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), f"model={model}"], tmp_path)
    module = hydra.utils.instantiate(cfg.model, num_classes=4, class_names=list("abcd")).eval()
    with torch.no_grad():
        out = module(torch.randn(2, 3, 48, 48))
    assert out["logits"].shape == (2, 4)
    zoom = getattr(module.net, "config", None)
    assert (zoom is None) == (model == "plain") and ("boxes_image" in out) == (zoom is not None)
    name = model.rsplit("/", 1)[-1]
    if model.startswith("interp/"):
        assert zoom.level == model.split("/")[1]
        assert zoom.sampler == ("affine" if name.startswith("affine_") else "slice")
        assert zoom.mode == name.removeprefix("affine_").split("_align")[0]
    if model.startswith("boxes/"):
        rule, _, sampler = name.partition("_")
        assert zoom.box == rule and zoom.sampler == (sampler or "affine")


def test_trainer_and_callbacks_instantiate(train_cfg):
    from fgzoom.runtime import instantiate_callbacks, instantiate_loggers

    loggers = instantiate_loggers(train_cfg.logger)
    callbacks = instantiate_callbacks(train_cfg.callbacks, has_logger=bool(loggers))
    trainer = hydra.utils.instantiate(train_cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.max_epochs == 1
