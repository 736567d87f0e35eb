"""Every config in configs/ composes and passes the start-up checks; every model config builds a network that runs."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import CONFIGS, compose_config, tiny_overrides

GROUP_OPTIONS = {
    group: sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
    for group in ("data", "model", "trainer", "callbacks", "logger", "debug", "experiment")
}


def _group_override(group: str, option: str, root: Path) -> list[str]:
    if group == "experiment" and option.startswith("recipe"):  # offline here: no hub weights to fetch
        return [f"experiment={option}", "model.backbone.pretrained=false", f"data.root={root}"]
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
    from fgzoom.cli.runtime import validate_config

    cfg = compose_config("train.yaml", _group_override(group, option, tmp_path), tmp_path)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # no ??? left, every ${} resolves
    validate_config(cfg)  # the typed model configs accept every key and value the option sets


def test_eval_config_falls_back_to_the_checkpoint_data(tmp_path):
    cfg = compose_config("eval.yaml", ["ckpt_path=/x.ckpt"], tmp_path)
    assert cfg.get("data") is None  # eval reads the data config saved in the checkpoint unless data= is given


# every model option, sub-folders included (model=boxes/learned, ...); the
# scheduler folder holds options of the model's scheduler key (model/scheduler=cosine), not models
SCHEDULES = sorted(p.stem for p in (CONFIGS / "model" / "scheduler").glob("*.yaml"))
MODEL_OPTIONS = sorted(
    str(p.relative_to(CONFIGS / "model").with_suffix("")) for p in (CONFIGS / "model").glob("**/*.yaml")
    if p.parent.name != "scheduler"
)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_option_instantiates_for_every_network(schedule, tmp_path, synthetic_root):
    for model in ("zoom", "plain", "zoom_image"):
        cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), f"model={model}",
                                            f"model/scheduler={schedule}"], tmp_path)
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        scheduler = hydra.utils.instantiate(cfg.model.scheduler)(optimizer, total_steps=10, steps_per_epoch=2)
        assert scheduler.optimizer is optimizer


def test_model_options_include_the_sub_folders():
    assert {m.split("/")[0] for m in MODEL_OPTIONS} >= {"boxes", "plain", "zoom", "zoom_image"}


@pytest.mark.parametrize("model", MODEL_OPTIONS)
def test_every_model_config_builds_a_network_that_runs(model, tmp_path, synthetic_root):
    """Each configs/model/**.yaml instantiates (an invalid combination, e.g. sampler=grid_sample with mode=area,
    raises ConfigError) and the network it builds runs a batch with the zoom its file name promises."""
    cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), f"model={model}"], tmp_path)
    module = hydra.utils.instantiate(cfg.model, num_classes=4, class_names=list("abcd")).eval()
    with torch.no_grad():
        out = module(torch.randn(2, 3, 48, 48))
    assert out["logits"].shape == (2, 4)
    zoom = getattr(module.net, "config", None)
    assert (zoom is None) == (model == "plain") and ("boxes_image" in out) == (zoom is not None)
    name = model.rsplit("/", 1)[-1]
    if model.startswith("boxes/"):  # <rule>_<sampler>, affine being grid_sample's old name; learned: grid_sample
        rule, _, sampler = name.partition("_")
        assert zoom.box == rule and zoom.sampler == {"affine": "grid_sample", "": "grid_sample"}.get(sampler, sampler)
    if model in ("zoom", "zoom_image"):
        assert zoom.sampler == "continuous"


def test_trainer_and_callbacks_instantiate(train_cfg):
    from fgzoom.cli.runtime import instantiate_callbacks, instantiate_loggers

    loggers = instantiate_loggers(train_cfg.logger)
    callbacks = instantiate_callbacks(train_cfg.callbacks, has_logger=bool(loggers))
    trainer = hydra.utils.instantiate(train_cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.max_epochs == 1


RECIPES = sorted(p.stem.removeprefix("recipe_") for p in (CONFIGS / "experiment").glob("recipe_*.yaml")
                 if p.stem != "recipe_base")


def test_there_is_a_recipe_for_every_fgvc_dataset():
    datasets = {p.stem for p in (CONFIGS / "data").glob("*.yaml")} - {"synthetic", "mnist_clutter", "animal_clutter", "imagefolder"}
    assert set(RECIPES) == datasets


@pytest.mark.parametrize("dataset", RECIPES)
def test_recipe_is_the_shared_protocol_on_its_dataset(dataset, tmp_path):
    cfg = compose_config("train.yaml", [f"experiment=recipe_{dataset}"], tmp_path)
    assert cfg.data.dataset == dataset and cfg.task_name == f"recipe_{dataset}"
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.data.val_fraction) == (448, 12, 0.1)
    assert cfg.model.backbone.name == "resnet50" and cfg.model.backbone.pretrained
    assert (cfg.model.optimizer.opt, cfg.model.optimizer.lr, cfg.trainer.max_epochs) == ("sgd", 1e-3, 80)
    assert (cfg.model.zoom.level, cfg.model.zoom.num_maps, cfg.model.zoom.align_corners) == ("image", 32, True)


def test_recipe_trains_from_the_command_line(tmp_path):
    """A short run of a recipe on a tiny CUB-200-2011 fixture in the official layout, with the sizes shrunk."""
    from fixtures.fgvc_layouts import make_cub200

    from tests.helpers import run_script_here

    layout = make_cub200(tmp_path / "data")
    result = run_script_here(
        "train.py", "experiment=recipe_cub200", f"data.root={layout.root}", "model.backbone.pretrained=false",
        "model.backbone.name=resnet18", "data.image_size=64", "data.batch_size=4", "data.num_workers=0",
        "model.zoom.num_maps=4", "trainer=cpu", "trainer.fast_dev_run=true", "callbacks.rich_progress_bar=null",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
