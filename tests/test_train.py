"""End-to-end training, evaluation from a checkpoint and resuming, on the tiny synthetic set."""

from __future__ import annotations

import json

import pytest
import torch

from fgzoom.cli.evaluate import evaluate
from fgzoom.cli.train import train
from tests.helpers import compose_config, run_script, run_script_here, tiny_overrides


@pytest.mark.parametrize("model", ["plain", "zoom"])
def test_fast_dev_run(model, tmp_path, synthetic_root):
    overrides = [o for o in tiny_overrides(synthetic_root) if not o.startswith("callbacks.")]
    cfg = compose_config("train.yaml", [*overrides, f"model={model}", "debug=fast"], tmp_path / "run")
    metrics = train(cfg)
    zoom_keys = {f"{split}/{key}" for split in ("val", "test")
                 for key in ("acc_raw", "acc_zoom", "degenerate_frac", "iou_mean", "box_dy", "box_dx", "box_center_err")}
    assert zoom_keys <= set(metrics) if model == "zoom" else not zoom_keys & set(metrics)
    assert all(0.0 <= metrics[f"{split}/{key}"] <= 1.0 for split in ("val", "test") for key in ("acc", "acc_macro"))
    assert not (tmp_path / "run" / "checkpoints").exists()  # a dev run saves nothing


def test_train_writes_outputs_and_eval_reads_the_checkpoint(tmp_path, synthetic_root):
    run = tmp_path / "run"
    cfg = compose_config("train.yaml", tiny_overrides(synthetic_root), run)
    metrics = train(cfg)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    for key in ("val/acc", "test/acc", "val/acc_raw", "val/acc_zoom", "test/acc_top5", "test/acc_macro"):
        assert 0.0 <= saved[key] <= 1.0, key
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / "config.yaml").is_file()
    assert (run / "csv" / "metrics.csv").is_file()

    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["fgzoom"]["class_names"] == sorted(p.name for p in (synthetic_root / "train").iterdir())

    eval_dir = tmp_path / "eval"
    eval_cfg = compose_config(
        "eval.yaml",
        [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "trainer=cpu", "logger=none"],
        eval_dir,
    )
    eval_metrics = evaluate(eval_cfg)
    # one epoch: the best checkpoint is the last one, so eval reproduces training's test metrics
    for key in ("test/acc", "test/acc_zoom", "test/loss", "test/maxboxacc_v2", "test/boxacc_v2@val_tau"):
        assert eval_metrics[key] == pytest.approx(saved[key], abs=1e-6), key
    assert json.loads((eval_dir / "metrics.json").read_text())["test/acc"] == pytest.approx(eval_metrics["test/acc"])


def test_resume_from_last_checkpoint_continues_training(tmp_path, synthetic_root):
    run = tmp_path / "run"
    train(compose_config("train.yaml", [*tiny_overrides(synthetic_root), "model=plain"], run))
    first = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert first["epoch"] == 0

    cfg = compose_config(
        "train.yaml", [*tiny_overrides(synthetic_root), "model=plain", "trainer.max_epochs=2", "ckpt_path=last"], run
    )
    train(cfg)
    second = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert second["epoch"] == 1
    assert second["global_step"] > first["global_step"]


def test_missing_checkpoint_is_one_clear_line(tmp_path, synthetic_root):
    cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), "ckpt_path=/no/such.ckpt"], tmp_path)
    from fgzoom.errors import ConfigError

    with pytest.raises(ConfigError, match="ckpt_path=/no/such.ckpt"):
        train(cfg)


def test_scripts_train_then_eval_like_a_user(tmp_path, synthetic_root):
    run = tmp_path / "r"
    result = run_script("train.py", *tiny_overrides(synthetic_root), "model=plain", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "metrics.json").is_file()
    result = run_script_here(  # the train above is the separate process; eval's script runs here
        "eval.py", f"ckpt_path={run}/checkpoints/last.ckpt", "trainer=cpu", f"hydra.run.dir={tmp_path / 'e'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test/acc" in json.loads((tmp_path / "e" / "metrics.json").read_text())


def test_script_reports_bad_input_in_one_line(tmp_path):
    result = run_script_here("train.py", "data=imagefolder", f"data.root={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: data.root=")
    assert "Traceback" not in result.stderr
