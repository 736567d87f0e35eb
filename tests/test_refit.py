"""refit=true: select the epoch on val, train again on train + val for that many epochs, test that model."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from fgzoom.cli.train import train
from fgzoom.data.datamodule import FGVCDataModule
from fgzoom.errors import ConfigError
from tests.helpers import TINY_SYNTHETIC, compose_config, tiny_overrides


def test_train_on_val_adds_the_validation_samples_to_train(synthetic_root):
    synthetic = dict(TINY_SYNTHETIC, part_size=tuple(TINY_SYNTHETIC["part_size"]))
    common = dict(
        dataset="synthetic", root=str(synthetic_root), image_size=48, num_workers=0, val_fraction=0.25,
        reader_options={"synthetic": synthetic},
    )
    held_out = FGVCDataModule(**common)
    merged = FGVCDataModule(**common, train_on_val=True)
    held_out.setup(), merged.setup()
    assert merged.splits["val"] == held_out.splits["val"]
    assert merged.splits["train"] == held_out.splits["train"] + held_out.splits["val"]
    assert merged.splits["test"] == held_out.splits["test"]


def test_train_on_val_with_val_on_test_is_refused(synthetic_root):
    with pytest.raises(ConfigError, match="data.train_on_val=true with data.val_on_test=true"):
        FGVCDataModule("synthetic", str(synthetic_root), train_on_val=True, val_on_test=True)


def test_refit_trains_on_train_and_val_for_the_selected_epochs_and_tests_that_model(tmp_path, synthetic_root):
    run = tmp_path / "run"
    overrides = [*tiny_overrides(synthetic_root), "model=plain", "trainer.max_epochs=2", "refit=true"]
    metrics = train(compose_config("train.yaml", overrides, run))

    best = next((run / "checkpoints").glob("best-*.ckpt"))
    selected_epoch = torch.load(best, map_location="cpu", weights_only=False)["epoch"]
    final = run / "refit" / "checkpoints" / "last.ckpt"
    assert final.is_file() and not list((run / "refit" / "checkpoints").glob("best-*.ckpt"))
    refit_state = torch.load(final, map_location="cpu", weights_only=False)
    assert refit_state["epoch"] == selected_epoch  # selected_epoch + 1 epochs, counted from 0
    refit_cfg = OmegaConf.load(run / "refit" / "config.yaml")
    assert refit_cfg.data.train_on_val is True and refit_cfg.trainer.max_epochs == selected_epoch + 1
    assert refit_cfg.data.mean == OmegaConf.load(run / "config.yaml").data.mean  # the selection run's statistics

    # more samples per epoch than the selection run: train + val
    steps_per_epoch = refit_state["global_step"] / (selected_epoch + 1)
    selection_steps = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert steps_per_epoch > selection_steps["global_step"] / 2

    saved = json.loads((run / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    refit_metrics = json.loads((run / "refit" / "metrics.json").read_text())
    assert saved["test/acc"] == pytest.approx(refit_metrics["test/acc"])  # test/* is the refit model's
    assert 0.0 <= saved["val/acc"] <= 1.0  # val/* stays the held-out selection


def test_refit_without_training_is_one_clear_line(tmp_path, synthetic_root):
    cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), "train=false", "refit=true"], tmp_path)
    with pytest.raises(ConfigError, match="refit=true refits a run it trains"):
        train(cfg)
