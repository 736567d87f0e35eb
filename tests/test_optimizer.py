"""model.optimizer: timm's optimizer with weight-decay groups, and lr_mult_new for the layers not loaded from
weights (fgzoom.models.optim), through the timm warmup-cosine schedule."""

from __future__ import annotations

from functools import partial

import hydra
import lightning as L
import pytest
import safetensors.torch
import timm
import torch
from lightning.pytorch.callbacks import Callback
from timm.optim import create_optimizer_v2, param_groups_layer_decay
from torch.utils.data import DataLoader

from fgzoom.errors import ConfigError
from fgzoom.models.module import FGVCModule
from fgzoom.models.optim import (
    LR_MULT_NEW_PRETRAINED,
    LR_PRETRAINED,
    LR_SCRATCH,
    RECIPE_BETAS_PRETRAINED,
    create_optimizer,
    new_parameter_names,
    param_groups,
)
from fgzoom.models.schedule import one_cycle, warmup_cosine
from tests.helpers import compose_config, run_script, tiny_overrides

ARCH = "test_resnet"
NEW_ZOOM_HEAD = {"net.attention.maps.0.weight", "net.attention.maps.1.weight", "net.attention.maps.1.bias",
                 "net.attention.classifier.weight"}


def _module(zoom: dict | None, num_classes: int = 5, mult: float = 10.0, **backbone) -> FGVCModule:
    torch.manual_seed(0)
    optimizer = partial(create_optimizer, opt="adamw", lr=1e-3, weight_decay=0.05, lr_mult_new=mult)
    return FGVCModule(backbone={"name": ARCH, **backbone}, num_classes=num_classes, zoom=zoom, optimizer=optimizer)


def _by_name(optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    return {g["name"]: g for g in optimizer.param_groups}


# ------------------------------------------------------------------ which parameters are new
@pytest.mark.parametrize("zoom, extra", [
    (None, set()),
    ({"level": "feature"}, NEW_ZOOM_HEAD),
    ({"level": "image"}, NEW_ZOOM_HEAD),
    ({"level": "feature", "attention": "channel_sum"}, set()),
])
def test_new_parameters_are_the_classifier_and_the_zoom_head(zoom, extra):
    module = _module(zoom)
    prefix = "net.model." if zoom is None else "net.split.model."
    assert new_parameter_names(module) == {prefix + "fc.weight", prefix + "fc.bias"} | extra


def test_classifier_timm_loads_is_not_new():
    """With the pretrained class count (1000) timm loads the classifier from the weights file."""
    module = _module({"level": "feature"}, num_classes=1000)
    assert new_parameter_names(module) == NEW_ZOOM_HEAD


@pytest.mark.parametrize("zoom", [None, {"level": "feature"}])
def test_new_parameters_are_exactly_those_not_loaded_from_the_file(tmp_path, zoom):
    """Load a weights file through model.backbone.pretrained_path with another class count: every parameter
    that is not new holds the file's value; every new one is absent from the file or re-initialised."""
    torch.manual_seed(1)
    source = timm.create_model(ARCH, pretrained=False)
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(source.state_dict(), str(path))
    weights = source.state_dict()
    module = _module(zoom, pretrained_path=str(path))
    prefix = "net.model." if zoom is None else "net.split.model."
    new = new_parameter_names(module)
    for name, p in module.named_parameters():
        key = name.removeprefix(prefix)
        loaded = name.startswith(prefix) and key in weights and weights[key].shape == p.shape and torch.equal(weights[key], p)
        assert loaded == (name not in new), name


def test_no_timm_model_is_a_config_error():
    net = torch.nn.Linear(3, 2)
    with pytest.raises(ConfigError, match="model.optimizer.lr_mult_new: found no timm model in Linear"):
        create_optimizer(net, lr=0.1, lr_mult_new=10.0)
    assert len(create_optimizer(net, lr=0.1).param_groups) == 1  # lr_mult_new=1 needs no timm model


# ------------------------------------------------------------------ groups and weight decay
@pytest.mark.parametrize("zoom", [None, {"level": "feature"}])
def test_groups_keep_timm_weight_decay_exclusion(zoom):
    module = _module(zoom)
    optimizer = module.optimizer_factory(module)
    groups = _by_name(optimizer)
    assert list(groups) == ["backbone_no_decay", "backbone", "new_no_decay", "new"]
    names = {id(p): n for n, p in module.named_parameters()}
    new = new_parameter_names(module)
    seen = []
    for name, group in groups.items():
        params = [names[id(p)] for p in group["params"]]
        seen += params
        assert all((n in new) == name.startswith("new") for n in params), name
        no_decay = name.endswith("no_decay")
        assert group["weight_decay"] == (0.0 if no_decay else 0.05)
        # timm's rule: no weight decay on 1-d parameters (norm weights) and biases
        assert all((p.ndim <= 1 or n.endswith(".bias")) == no_decay for n, p in zip(params, group["params"], strict=True))
        assert group["lr"] == 1e-3 and group.get("lr_scale", 1.0) == (10.0 if name.startswith("new") else 1.0)
    assert sorted(seen) == sorted(n for n, _ in module.named_parameters())  # every parameter once


def test_multiplier_one_gives_timm_own_groups():
    """lr_mult_new=1: the groups (and their order) of create_optimizer_v2 on the module, so optimizer states
    of older checkpoints still load."""
    module = _module({"level": "feature"}, mult=1.0)
    ours = create_optimizer(module, opt="adamw", lr=1e-3, weight_decay=0.05)
    timms = create_optimizer_v2(module, opt="adamw", lr=1e-3, weight_decay=0.05)
    assert type(ours) is type(timms)
    assert [[id(p) for p in g["params"]] for g in ours.param_groups] == [
        [id(p) for p in g["params"]] for g in timms.param_groups
    ]
    assert [g["weight_decay"] for g in ours.param_groups] == [g["weight_decay"] for g in timms.param_groups]
    assert all("lr_scale" not in g for g in ours.param_groups)
    ours.load_state_dict(timms.state_dict())


def test_bad_values_are_config_errors():
    module = _module(None)
    with pytest.raises(ConfigError, match=r"model.optimizer.lr_mult_new=0.0: must be > 0"):
        param_groups(module, 0.05, lr_mult_new=0.0)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match=rf"^model.optimizer.layer_decay={bad}: must be in \(0, 1\]"):
            create_optimizer(module, layer_decay=bad)
    with pytest.raises(ConfigError, match=r"model.optimizer.param_group_fn=.*not supported"):
        create_optimizer(module, param_group_fn="x")
    create_optimizer(module, layer_decay=None)  # null is fine


def test_weight_decay_zero_puts_everything_in_no_decay_groups():
    module = _module({"level": "feature"})
    groups = _by_name(create_optimizer(module, lr=1e-3, weight_decay=0.0, lr_mult_new=10.0))
    assert list(groups) == ["backbone_no_decay", "new_no_decay"]


# ------------------------------------------------------------------ layer-wise learning-rate decay
@pytest.mark.parametrize("zoom", [None, {"level": "feature"}, {"level": "image"}], ids=["plain", "feature", "image"])
def test_layer_decay_scales_are_timms_and_new_layers_keep_their_multiplier(zoom):
    """Every pretrained parameter gets the lr_scale timm's param_groups_layer_decay gives it on the bare timm
    model, the new layers (outside timm, the classifier) lr_mult_new, and weight decay stays as without it."""
    module = _module(zoom, mult=10.0)
    groups = create_optimizer(module, lr=1e-3, weight_decay=0.05, lr_mult_new=10.0, layer_decay=0.75).param_groups
    timm_model = module.net.split.model if zoom else module.net.model
    expected = {id(p): g["lr_scale"] for g in param_groups_layer_decay(timm_model, layer_decay=0.75) for p in g["params"]}
    new = {id(p) for n, p in module.named_parameters() if n in new_parameter_names(module)}
    without = {id(p): g["weight_decay"] for g in create_optimizer(module, lr=1e-3, weight_decay=0.05,
                                                                 lr_mult_new=10.0).param_groups for p in g["params"]}
    seen = set()
    for group in groups:
        for param in group["params"]:
            seen.add(id(param))
            assert group["lr_scale"] == (10.0 if id(param) in new else expected[id(param)]), group["name"]
            assert group["weight_decay"] == without[id(param)], group["name"]
    assert seen == {id(p) for p in module.parameters()}
    scales = sorted({g["lr_scale"] for g in groups if g["name"].startswith("backbone")})
    assert len(scales) > 3 and scales[-1] < 1.0  # several layers; the top layer (the classifier) is new
    names = [g["name"] for g in groups]
    assert names[0].startswith("backbone_depth") and names[-1] == "new"  # stem first, new layers last


def test_layer_decay_one_changes_no_rate():
    module = _module({"level": "feature"}, mult=1.0)
    groups = create_optimizer(module, lr=1e-3, weight_decay=0.05, layer_decay=1.0).param_groups
    assert {g["lr_scale"] for g in groups} == {1.0}


def test_layer_decay_reaches_the_training_steps_through_the_schedule():
    module = _module({"level": "feature"}, mult=4.0)
    module.optimizer_factory = partial(create_optimizer, opt="adamw", lr=1e-3, weight_decay=0.05, lr_mult_new=4.0,
                                       layer_decay=0.5)
    module.scheduler_factory = partial(warmup_cosine, warmup_epochs=1.0)
    lrs = _fit(module)
    depths = sorted({int(n.split("depth")[1].split("_")[0]) for n in lrs[0] if "depth" in n})
    for step in lrs:
        top = step["new"] / 4.0  # the schedule's lr; the new layers run at 4x
        for d in depths:
            assert step[f"backbone_depth{d}"] == pytest.approx(top * 0.5**d, rel=1e-9)


# ------------------------------------------------------------------ learning rates through the schedule
@pytest.mark.parametrize("warmup_epochs", [0.0, 2.0])
def test_schedule_keeps_the_ratio_at_every_step(warmup_epochs):
    """timm's CosineLRScheduler multiplies each group's lr_scale into the lr it sets: the new layers run at
    exactly lr_mult_new times the backbone's lr at every update (warmup included, and at lr_min), and the
    backbone's schedule is the one without a multiplier."""
    module = _module({"level": "feature"}, mult=10.0)
    optimizer = module.optimizer_factory(module)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    options = dict(total_steps=20, warmup_epochs=warmup_epochs, steps_per_epoch=2, min_lr_ratio=0.01)
    scheduler, reference_scheduler = warmup_cosine(optimizer, **options), warmup_cosine(reference, **options)
    for step in range(21):
        groups = _by_name(optimizer)
        backbone = groups["backbone"]["lr"]
        assert groups["backbone_no_decay"]["lr"] == backbone == pytest.approx(reference.param_groups[0]["lr"])
        assert groups["new"]["lr"] == groups["new_no_decay"]["lr"] == pytest.approx(10.0 * backbone, rel=1e-12)
        scheduler.step_update(num_updates=step + 1)
        reference_scheduler.step_update(num_updates=step + 1)
    assert backbone == pytest.approx(1e-5)  # lr_min of the backbone; the new layers end at 10x that


class _GroupLearningRates(Callback):
    def __init__(self) -> None:
        self.lrs: list[dict[str, float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append({g["name"]: g["lr"] for g in optimizer.param_groups})


def _fit(module: FGVCModule, steps: int = 6) -> list[dict[str, float]]:
    images = torch.randn(steps * 2, 3, 32, 32)
    data = [{"image": images[i], "label": torch.tensor(i % 5)} for i in range(len(images))]
    seen = _GroupLearningRates()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[seen],
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    return seen.lrs


@pytest.mark.parametrize("with_scheduler", [True, False])
def test_training_steps_use_the_multiplied_lr(with_scheduler):
    """The wiring in FGVCModule.configure_optimizers: a timm scheduler (stepped by lr_scheduler_step) or none."""
    module = _module({"level": "feature"}, mult=4.0)
    module.scheduler_factory = partial(warmup_cosine, warmup_epochs=1.0) if with_scheduler else None
    lrs = _fit(module)
    assert len(lrs) == 6
    for step in lrs:
        assert step["new"] == step["new_no_decay"] == pytest.approx(4.0 * step["backbone"], rel=1e-12)
    if with_scheduler:
        assert lrs[0]["backbone"] == pytest.approx(1e-6)  # warmup_lr_init
        assert len({round(s["backbone"], 12) for s in lrs}) == 6  # the schedule moved every step
    else:
        assert all(s["backbone"] == 1e-3 for s in lrs)


def test_one_cycle_peaks_each_group_at_its_scaled_lr_and_cycles_beta1():
    """torch's OneCycleLR: every group warms up from lr / 25 to its lr * lr_scale at pct_start and anneals to
    about 0; the new layers stay at lr_mult_new times the backbone's lr; Adam's beta1 goes 0.95 -> 0.85 -> 0.95."""
    module = _module({"level": "feature"}, mult=10.0)
    optimizer = module.optimizer_factory(module)
    scheduler = one_cycle(optimizer, total_steps=20, pct_start=0.3)
    seen = []
    for _ in range(20):
        groups = _by_name(optimizer)
        seen.append((groups["backbone"]["lr"], groups["new"]["lr"], groups["backbone"]["betas"][0]))
        assert groups["new"]["lr"] == pytest.approx(10.0 * groups["backbone"]["lr"], rel=1e-9)
        optimizer.step()
        scheduler.step()
    backbone = [b for b, _, _ in seen]
    assert backbone[0] == pytest.approx(1e-3 / 25) and max(backbone) == pytest.approx(1e-3)
    assert backbone.index(max(backbone)) == 5  # 0.3 * (20 - 1), rounded down: the peak step
    assert backbone[-1] < 1e-5
    betas = [beta for _, _, beta in seen]
    assert betas[0] == pytest.approx(0.95) and betas[5] == pytest.approx(0.85) and betas[-1] > 0.94


def test_one_cycle_rejects_a_warmup_share_outside_0_1_and_momentum_an_optimizer_lacks():
    module = _module(None, mult=1.0)
    with pytest.raises(ConfigError, match="model.scheduler.pct_start"):
        one_cycle(module.optimizer_factory(module), total_steps=10, pct_start=1.0)
    adagrad = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    with pytest.raises(ConfigError, match="model.scheduler.cycle_momentum=false"):
        one_cycle(adagrad, total_steps=10)
    one_cycle(adagrad, total_steps=10, cycle_momentum=False)


def test_one_cycle_resumed_with_more_steps_continues_on_the_new_plan():
    """A run resumed with a larger budget (trainer.max_epochs raised, ckpt_path=last): the step count comes from
    the checkpoint, the plan (total steps) from the new config; torch's own OneCycleLR would stop at the old
    total ("Tried to step 6 times")."""
    def adamw():
        return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)

    first, reference = adamw(), adamw()
    scheduler, planned = one_cycle(first, total_steps=5), one_cycle(reference, total_steps=10)
    for _ in range(5):
        first.step(), scheduler.step(), reference.step(), planned.step()
    resumed_optimizer = adamw()
    resumed = one_cycle(resumed_optimizer, total_steps=10)
    resumed_optimizer.load_state_dict(first.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.last_epoch == 5 and resumed.total_steps == 10
    for _ in range(5):
        resumed_optimizer.step(), resumed.step(), reference.step(), planned.step()
        assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"])


def test_training_steps_follow_one_cycle_to_the_last_update():
    """The wiring for a torch scheduler: Lightning steps it once per update, through the last one."""
    module = _module({"level": "feature"}, mult=4.0)
    module.scheduler_factory = partial(one_cycle, pct_start=0.5)
    lrs = _fit(module)
    assert len(lrs) == 6
    backbone = [s["backbone"] for s in lrs]
    assert backbone[0] == pytest.approx(1e-3 / 25)
    assert backbone.index(max(backbone)) == 2 and backbone[-1] < backbone[1]
    for step in lrs:
        assert step["new"] == pytest.approx(4.0 * step["backbone"], rel=1e-9)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("network", ["zoom", "plain"])
def test_config_defaults_follow_scratch_or_pretrained_and_reach_the_optimizer(tmp_path, network):
    cfg = compose_config("train.yaml", [f"model={network}", f"model.backbone.name={ARCH}"], tmp_path)
    assert cfg.model.optimizer.lr is None and cfg.model.optimizer.lr_mult_new is None
    module = hydra.utils.instantiate(cfg.model, num_classes=3)
    groups = _by_name(module.optimizer_factory(module))
    assert groups["backbone"]["lr"] == LR_SCRATCH and "lr_scale" not in groups.get("new", {})  # from scratch

    pretrained = compose_config(
        "train.yaml", [f"model={network}", f"model.backbone.name={ARCH}", "model.backbone.pretrained=true"], tmp_path
    )
    module.hparams.backbone = dict(pretrained.model.backbone)  # what instantiating it (with weights) records
    groups = _by_name(module.optimizer_factory(module))
    assert groups["backbone"]["lr"] == LR_PRETRAINED and groups["new"]["lr_scale"] == LR_MULT_NEW_PRETRAINED

    cfg = compose_config(
        "train.yaml", [f"model={network}", f"model.backbone.name={ARCH}", "model.optimizer.lr_mult_new=10",
                       "model.optimizer.lr=3e-4"], tmp_path
    )
    module = hydra.utils.instantiate(cfg.model, num_classes=3)
    groups = _by_name(module.optimizer_factory(module))
    assert groups["new"]["lr_scale"] == 10.0 and "lr_scale" not in groups["backbone"]
    assert groups["backbone"]["lr"] == 3e-4


@pytest.mark.parametrize("network", ["zoom", "plain"])
def test_betas_default_to_the_fine_tuning_recipe_and_stay_the_optimizers_own_otherwise(tmp_path, network):
    cfg = compose_config("train.yaml", [f"model={network}", f"model.backbone.name={ARCH}"], tmp_path)
    assert cfg.model.optimizer.betas is None
    module = hydra.utils.instantiate(cfg.model, num_classes=3)
    optimizer = module.optimizer_factory(module)  # from scratch: AdamW's own (0.9, 0.999)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert all(g["betas"] == (0.9, 0.999) for g in optimizer.param_groups)

    pretrained = compose_config(
        "train.yaml", [f"model={network}", f"model.backbone.name={ARCH}", "model.backbone.pretrained=true"], tmp_path
    )
    module.hparams.backbone = dict(pretrained.model.backbone)  # what instantiating it (with weights) records
    assert all(g["betas"] == RECIPE_BETAS_PRETRAINED for g in module.optimizer_factory(module).param_groups)

    cfg = compose_config("train.yaml", [f"model={network}", f"model.backbone.name={ARCH}",
                                        "model.optimizer.betas=[0.95,0.99]"], tmp_path)
    module = hydra.utils.instantiate(cfg.model, num_classes=3)
    module.hparams.backbone = dict(pretrained.model.backbone)  # a given value wins over the recipe's
    assert all(g["betas"] == (0.95, 0.99) for g in module.optimizer_factory(module).param_groups)

    cfg = compose_config("train.yaml", [f"model={network}", f"model.backbone.name={ARCH}",
                                        "model.optimizer.opt=sgd", "+model.optimizer.momentum=0.9"], tmp_path)
    module = hydra.utils.instantiate(cfg.model, num_classes=3)
    module.hparams.backbone = dict(pretrained.model.backbone)
    optimizer = module.optimizer_factory(module)  # null betas are not passed to an optimizer without them
    assert isinstance(optimizer, torch.optim.SGD) and "betas" not in optimizer.param_groups[0]


@pytest.mark.parametrize("betas", [[0.9], [0.9, 1.0], [-0.1, 0.999]])
def test_bad_betas_are_one_line(betas):
    with pytest.raises(ConfigError, match=r"model\.optimizer\.betas=.*two numbers in \[0, 1\)"):
        create_optimizer(torch.nn.Linear(2, 2), betas=betas)


@pytest.mark.slow  # a whole train/eval through the scripts: CI runs the slow suite too
def test_layer_decay_from_the_command_line(tmp_path, synthetic_root):
    result = run_script("train.py", *tiny_overrides(synthetic_root), "model.optimizer.layer_decay=0.75",
                        "model.optimizer.lr_mult_new=10", "trainer.limit_train_batches=2", "figures_every_n_epochs=0",
                        f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    bad = run_script("train.py", *tiny_overrides(synthetic_root), "model.optimizer.layer_decay=2",
                     f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("error: model.optimizer.layer_decay=2")
