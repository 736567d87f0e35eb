"""Every config in configs/ composes, and the model/data configs instantiate."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from fgzoom.models.zoom import ZoomConfig
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
def test_train_config_composes_with_every_group_option(group, option, tmp_path):
    cfg = compose_config("train.yaml", _group_override(group, option, tmp_path), tmp_path)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["seed"] is not None
    assert "trainer" in resolved


def test_eval_config_composes(tmp_path):
    cfg = compose_config("eval.yaml", ["ckpt_path=/x.ckpt"], tmp_path)
    assert cfg.ckpt_path == "/x.ckpt"
    assert cfg.get("data") is None  # falls back to the checkpoint's data


# model options in sub-folders (model=interp/feature/bilinear, model=boxes/learned, ...)
NESTED_MODELS = sorted(
    str(p.relative_to(CONFIGS / "model").with_suffix("")) for p in (CONFIGS / "model").glob("*/**/*.yaml")
)


def test_nested_model_folders_are_listed():
    assert {m.split("/")[0] for m in NESTED_MODELS} >= {"interp", "boxes"}
    assert "boxes/learned" in NESTED_MODELS and "interp/image/affine_bicubic" in NESTED_MODELS


@pytest.mark.parametrize("model", NESTED_MODELS)
def test_nested_model_configs_compose_into_a_valid_zoom_config(model, tmp_path):
    """Every configs/model/<folder>/.../<option>.yaml composes and its model.zoom passes ZoomConfig's
    validation (an invalid combination, e.g. sampler=affine with mode=area, raises ConfigError)."""
    cfg = compose_config("train.yaml", [f"model={model}"], tmp_path)
    zoom = OmegaConf.to_container(cfg.model.zoom, resolve=True)
    config = ZoomConfig.from_dict(zoom)
    name = model.rsplit("/", 1)[-1]
    if model.startswith("interp/"):
        assert config.level == model.split("/")[1]
        assert config.sampler == ("affine" if name.startswith("affine_") else "slice")
    if model.startswith("boxes/"):
        rule, _, sampler = name.partition("_")
        assert config.box == rule and config.sampler == (sampler or "affine")


@pytest.mark.parametrize("model", GROUP_OPTIONS["model"])
def test_model_configs_instantiate(model, tmp_path, synthetic_root):
    cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), f"model={model}"], tmp_path)
    module = hydra.utils.instantiate(cfg.model, num_classes=4, class_names=list("abcd"))
    assert module.hparams.num_classes == 4


def test_trainer_and_callbacks_instantiate(train_cfg):
    from fgzoom.runtime import instantiate_callbacks, instantiate_loggers

    loggers = instantiate_loggers(train_cfg.logger)
    callbacks = instantiate_callbacks(train_cfg.callbacks, has_logger=bool(loggers))
    trainer = hydra.utils.instantiate(train_cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.max_epochs == 1
