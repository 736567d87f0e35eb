"""The training recipe's data side: translation without crop_pct, the data's own normalization, the
per-dataset flip choice; and the reference loop the recipe is held against: fair to the recipe, and a guard
that fails when the plain model falls behind it (and is shown to fail on a broken recipe)."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision import tv_tensors

from fgzoom.cli.runtime import fill_normalization, record_normalization
from fgzoom.data.datamodule import FGVCDataModule
from fgzoom.data.index import Sample
from fgzoom.data.stats import channel_stats
from fgzoom.data.transforms import build_transforms
from fgzoom.errors import ConfigError
from tests.helpers import CONFIGS, TINY_SYNTHETIC, compose_config, run_script_here, tiny_overrides

FLIP_SENSITIVE = {"mnist_clutter"}  # orientation carries the class: no flips


def _image_with_box(tmp_path: Path, size: int = 32) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
    image = torch.zeros(3, size, size, dtype=torch.uint8)
    image[:, 10:14, 12:18] = 255  # a white part, box (y0, x0, y1, x1) = (10, 12, 14, 18)
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[12.0, 10.0, 18.0, 14.0]]), format="XYXY", canvas_size=(size, size))
    return tv_tensors.Image(image), boxes


def test_translate_shifts_image_and_box_together_and_eval_keeps_the_frame(tmp_path: Path) -> None:
    image, boxes = _image_with_box(tmp_path)
    train = build_transforms(True, 32, crop_pct=1.0, hflip=0.0, translate=0.125)
    shifts = set()
    for seed in range(20):
        torch.manual_seed(seed)
        tensor, moved = train(image, boxes)
        x0, y0, x1, y1 = (int(v) for v in moved[0].tolist())
        assert (x1 - x0, y1 - y0) == (6, 4)  # the box moves with the image, unclipped here
        assert tensor[0, y0:y1, x0:x1].min() == 255 and tensor[0].sum() == 24 * 255  # the whole part, nothing else
        shifts.add((y0 - 10, x0 - 12))
    assert len(shifts) > 5 and all(abs(dy) <= 4 and abs(dx) <= 4 for dy, dx in shifts)  # 0.125 * 32 = 4 px

    evaluation = build_transforms(False, 32, crop_pct=1.0, translate=0.125)
    tensor, same = evaluation(image, boxes)
    assert same[0].tolist() == [12.0, 10.0, 18.0, 14.0] and tensor[0].sum() == 24 * 255  # whole frame, no shift


@pytest.mark.parametrize(
    "key, value, match",
    [("translate", 0.5, "data.translate"), ("translate", -0.1, "data.translate"), ("hflip", 1.5, "data.hflip")],
)
def test_bad_augmentation_values_name_the_key(key: str, value: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_transforms(True, 32, **{key: value})


def _solid_samples(tmp_path: Path) -> list[Sample]:
    samples = []
    for i, colour in enumerate([(0, 0, 255), (255, 0, 255), (0, 0, 255), (255, 0, 255)]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 12, 3), colour, np.uint8)).save(path)
        samples.append(Sample(path, 0))
    return samples


def test_channel_stats_are_the_pixel_mean_and_std(tmp_path: Path) -> None:
    mean, std = channel_stats(_solid_samples(tmp_path), image_size=8)
    assert mean == pytest.approx([0.5, 0.0, 1.0], abs=1e-4)
    assert std == pytest.approx([0.5, 1e-3, 1e-3], abs=1e-4)  # a constant channel is floored, not zero
    half, _ = channel_stats(_solid_samples(tmp_path), image_size=8, max_images=2)  # every other image
    assert half == pytest.approx([0.0, 0.0, 1.0], abs=1e-4)


def test_datamodule_auto_normalization(tmp_path: Path, synthetic_root: Path) -> None:
    cfg = compose_config("train.yaml", tiny_overrides(synthetic_root), tmp_path)
    fill_normalization(cfg)
    assert cfg.data.mean == "auto" and cfg.data.std == "auto"  # from scratch: the data's own statistics
    import hydra

    dm = hydra.utils.instantiate(cfg.data, seed=0)
    dm.prepare_data()
    record_normalization(cfg, dm)
    dm.setup()
    expected = channel_stats(dm.splits["train"], cfg.data.image_size)
    assert list(cfg.data.mean) == expected[0] and list(cfg.data.std) == expected[1]
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)  # normalized as on the device
    assert batch["image"].dtype == torch.float32 and batch["image"].mean().abs() < 0.5  # roughly centred
    for bad in ("mean", 0.5, [0.5, 0.5]):
        with pytest.raises(ConfigError, match="data.mean"):
            FGVCDataModule(dataset="synthetic", root=str(synthetic_root), mean=bad)
    with pytest.raises(ConfigError, match="data.std"):
        FGVCDataModule(dataset="synthetic", root=str(synthetic_root), std=[0.2, 0.0, 0.2])


def test_pretrained_weights_take_the_backbone_normalization(tmp_path: Path, synthetic_root: Path) -> None:
    cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), "model.backbone.name=tf_efficientnet_lite0",
                                        "model.backbone.pretrained=true"], tmp_path)
    fill_normalization(cfg)
    assert list(cfg.data.mean) == [0.5, 0.5, 0.5] and list(cfg.data.std) == [0.5, 0.5, 0.5]


def test_saved_config_holds_the_numbers_training_used(tmp_path: Path, synthetic_root: Path) -> None:
    from fgzoom.cli.train import train

    cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), "model=plain", "logger=none"], tmp_path)
    train(cfg)
    saved = OmegaConf.load(tmp_path / "config.yaml").data
    assert len(saved.mean) == 3 and all(isinstance(v, float) for v in [*saved.mean, *saved.std])


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml")))
def test_every_dataset_config_states_its_flip_and_translation(name: str) -> None:
    cfg = OmegaConf.load(CONFIGS / "data" / f"{name}.yaml")
    base = OmegaConf.load(CONFIGS / "data" / "imagefolder.yaml")
    hflip = cfg.get("hflip", base.hflip)
    assert hflip == (0.0 if name in FLIP_SENSITIVE else 0.5)
    crop_pct, translate = cfg.get("crop_pct", base.crop_pct), cfg.get("translate", base.translate)
    assert (crop_pct < 1.0) != (translate > 0.0), "exactly one source of translation"


# ---------------------------------------------------------------------------------------- the reference loop
def test_reference_loop_takes_the_recipe_batch_decay_rule_and_head_rate(tmp_path: Path, synthetic_root: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop is fair to the recipe: data.batch_size, timm's no-decay rule, lr_mult_new on the classifier with
    weights, every training image (train + val) unless told otherwise, and no image twice under a refit."""
    import timm

    from fgzoom.bench import baseline

    model = timm.create_model("resnet10t", num_classes=4)
    groups = baseline.optimizer_groups(model, 0.05, 2e-3, lr_mult_new=10.0)
    head = {id(p) for p in model.get_classifier().parameters()}
    for group in groups:
        assert all(p.ndim > 1 for p in group["params"]) == (group["weight_decay"] > 0)  # biases, norms: no decay
        assert all((id(p) in head) == (group["lr"] == pytest.approx(2e-2)) for p in group["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert {g["lr"] for g in baseline.optimizer_groups(model, 0.05, 2e-3, lr_mult_new=1.0)} == {2e-3}

    common = dict(dataset="synthetic", root=str(synthetic_root), image_size=48, batch_size=5, num_workers=0,
                  reader_options={"synthetic": dict(TINY_SYNTHETIC)})
    dm = FGVCDataModule(**common)
    dm.setup()
    assert baseline.loop_training_images(dm) == dm.splits["train"] + dm.splits["val"]
    assert baseline.loop_training_images(dm, train_on_val=False) == dm.splits["train"]
    refit = FGVCDataModule(**common, train_on_val=True)
    assert sorted(map(str, baseline.loop_training_images(refit))) == sorted(map(str, dm.splits["train"] + dm.splits["val"]))
    on_test = FGVCDataModule(**common, val_on_test=True)
    assert baseline.loop_training_images(on_test) == on_test.read_index().train  # never the test images

    class Built(Exception):  # stops the loop once its train loader exists
        pass

    def recording(dataset, batch_size, *args, **kwargs):
        raise Built(len(dataset), batch_size)

    monkeypatch.setattr(baseline, "DataLoader", recording)
    with pytest.raises(Built) as built:
        baseline.reference_loop(FGVCDataModule(**common), "resnet10t", epochs=1, seed=0)
    assert built.value.args == (len(dm.splits["train"]) + len(dm.splits["val"]), 5)  # every image, data.batch_size


@pytest.mark.slow
def test_bench_baseline_runs_the_loop_from_the_command_line(tmp_path: Path, synthetic_root: Path) -> None:
    overrides = [o for o in tiny_overrides(synthetic_root) if not o.startswith(("callbacks.", "model.backbone"))]
    result = run_script_here("bench.py", "baseline", "--models", "loop", "--seeds", "1", "--out",
                             str(tmp_path / "bench.json"), *overrides, "model.backbone.name=resnet10t")
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| loop |"))
    assert 0.0 <= float(row.split("|")[2]) <= 1.0


# The guard: on a tiny budget the project's plain model must not fall more than GUARD_MARGIN below the loop.
# A small synthetic set the loop learns within the budget (its mark on a clean body, 32 px, 4 classes, 160
# training and 100 test images), resnet10t from scratch for 12 epochs at batch 16, seed 1, one thread (the
# numbers depend on the thread count; one thread makes them the same on any core count). Measured at the
# commit that added it (one thread, a loaded 2-core x86_64 CPU): loop 1.00, plain 0.97; with the plain recipe
# broken on purpose (model.optimizer.lr=0.2, 100x the recipe's) plain 0.37, which the second test requires to
# fail the guard. Seeds 2 and 3 gave plain 0.98 and 0.95 against the loop's 1.00.
GUARD_SET = dict(num_classes=4, train_per_class=40, test_per_class=25, image_size=32, part_size=(9, 10),
                 num_decoys=0, num_clutter=0, seed=0)
GUARD_BUDGET = ["model.backbone.name=resnet10t", "trainer.max_epochs=12", "data.batch_size=16", "seed=1"]
GUARD_MARGIN = 0.10  # test/acc points plain may fall below the loop
LOOP_LEARNS = 0.90  # the loop must reach this, or the guard measures nothing


@contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def guard_cfg(tmp_path_factory):
    """The guard's train config (model=plain on the guard set, the budget above); call it with more overrides."""
    from fgzoom.data.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("guard") / "synthetic"
    generate(root, SyntheticSpec(**GUARD_SET))
    synth = [f"data.reader_options.synthetic.{k}={v}" for k, v in GUARD_SET.items() if k != "part_size"]
    data = [f"data.root={root}", *synth, "data.reader_options.synthetic.part_size=[9,10]",
            f"data.image_size={GUARD_SET['image_size']}", "data.num_workers=0"]
    base = [*data, *GUARD_BUDGET, "model=plain", "trainer=cpu", "callbacks=none", "logger=none",
            "figures_every_n_epochs=0"]
    runs, number = tmp_path_factory.mktemp("guard_runs"), itertools.count()
    return lambda *extra: compose_config("train.yaml", [*base, *extra], runs / str(next(number)))


@pytest.fixture(scope="module")
def loop_accuracy(guard_cfg) -> float:
    """test/acc of the reference loop on the guard's data, backbone, budget and seed (as bench.py runs it)."""
    import hydra

    from fgzoom.bench.baseline import reference_loop

    cfg = guard_cfg()
    datamodule = hydra.utils.instantiate(cfg.data, seed=cfg.seed)
    datamodule.prepare_data()
    with _one_thread():
        return reference_loop(datamodule, cfg.model.backbone.name, int(cfg.trainer.max_epochs), cfg.seed)["test/acc"]


def _plain_accuracy(guard_cfg, *overrides: str) -> float:
    from fgzoom.cli.train import train

    with _one_thread():
        return train(guard_cfg(*overrides))["test/acc"]


@pytest.mark.slow
def test_plain_holds_the_reference_loop_on_a_tiny_budget(guard_cfg, loop_accuracy: float) -> None:
    plain = _plain_accuracy(guard_cfg)
    print(f"loop guard: reference loop {loop_accuracy:.3f}, model=plain {plain:.3f}, margin {GUARD_MARGIN}")
    assert loop_accuracy >= LOOP_LEARNS, f"the reference loop reached only {loop_accuracy:.3f}"
    assert plain >= loop_accuracy - GUARD_MARGIN, (
        f"model=plain test/acc {plain:.3f} is more than {GUARD_MARGIN} below the reference loop's "
        f"{loop_accuracy:.3f}")


@pytest.mark.slow
def test_the_loop_guard_fails_a_broken_recipe(guard_cfg, loop_accuracy: float) -> None:
    """The guard can fail: with 100x the recipe's learning rate the plain model falls below the margin."""
    broken = _plain_accuracy(guard_cfg, "model.optimizer.lr=0.2")
    print(f"loop guard, lr x100: reference loop {loop_accuracy:.3f}, model=plain {broken:.3f}")
    assert broken < loop_accuracy - GUARD_MARGIN, f"lr x100 gave {broken:.3f}, loop {loop_accuracy:.3f}"


def test_best_checkpoint_prefers_the_later_epoch_on_a_tie(tmp_path: Path) -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from fgzoom.callbacks.best_checkpoint import LatestBestCheckpoint

    val_acc = [0.5, 0.9, 0.9, 0.8]  # epochs 1 and 2 tie: epoch 2 must be kept

    class Constant(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - 1).pow(2).sum()

        def validation_step(self, batch, batch_idx):
            self.log("val/acc", val_acc[self.current_epoch])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1)
    best = LatestBestCheckpoint(dirpath=tmp_path, filename="best-epoch{epoch:03d}", monitor="val/acc", mode="max",
                                save_top_k=1, auto_insert_metric_name=False)
    trainer = L.Trainer(max_epochs=4, callbacks=[best], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Constant(), loader, loader)
    assert Path(best.best_model_path).name == "best-epoch002.ckpt"
    assert sorted(p.name for p in tmp_path.glob("best-*.ckpt")) == ["best-epoch002.ckpt"]
