"""A shareable model folder: written from a checkpoint, read by eval and predict without the run folder, equal to
the checkpoint in what it predicts; an unreachable hub is one line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from fgzoom.checkpoints.io import load_model
from fgzoom.cli.train import train
from tests.helpers import compose_config, run_script, run_script_here, tiny_overrides


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root) -> Path:
    run = tmp_path_factory.mktemp("folder") / "run"
    train(compose_config("train.yaml", [*tiny_overrides(synthetic_root), "logger=none"], run))
    return run


def test_folder_predicts_what_the_checkpoint_predicts_and_carries_a_card(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    result = run_script_here("save_model.py", f"ckpt_path={ckpt}", f"out={tmp_path / 'model'}",
                        f"hydra.run.dir={tmp_path / 'save'}")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.yaml", "fgzoom.json", "model.safetensors"]
    card = (folder / "README.md").read_text()
    metrics = json.loads((trained / "metrics.json").read_text())
    assert f"{metrics['test/acc']:.4f}" in card and "seed 42" in card
    from_ckpt, from_folder = load_model(str(ckpt)).eval(), load_model(str(folder)).eval()
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(from_folder(x)["logits"], from_ckpt(x)["logits"], rtol=0, atol=0)


@pytest.mark.slow  # a whole train/eval through the scripts: CI runs the slow suite too
def test_eval_and_predict_take_the_folder_without_the_run(trained, synthetic_root, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    folder = tmp_path / "shared" / "model"
    assert run_script_here("save_model.py", f"ckpt_path={ckpt}", f"out={folder}",
                      f"hydra.run.dir={tmp_path / 'save'}").returncode == 0
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)  # no run folder, no checkpoint next to it
    result = run_script_here("eval.py", f"ckpt_path={moved}", "trainer=cpu", "eval.num_images=0",
                        f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 0, result.stderr[-3000:]
    folder_metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    result = run_script_here("eval.py", f"ckpt_path={ckpt}", "trainer=cpu", "eval.num_images=0",
                        f"hydra.run.dir={tmp_path / 'eval_ckpt'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert folder_metrics == json.loads((tmp_path / "eval_ckpt" / "metrics.json").read_text())
    image = sorted((synthetic_root / "test").rglob("*.png"))[0]
    result = run_script_here("predict.py", f"ckpt_path={moved}", f"input={image}", f"hydra.run.dir={tmp_path / 'pred'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))) == 1


@pytest.mark.slow  # 9 s: the fast suite keeps to its time budget
def test_push_to_hub_offline_is_one_line_and_keeps_the_folder(trained, tmp_path):
    result = run_script("save_model.py", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path / 'm'}",
                        "push_to_hub=true", "hub_repo=someone/model", f"hydra.run.dir={tmp_path / 'save'}",
                        env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: push_to_hub=true: the Hugging Face Hub is not reachable"), result.stderr[-2000:]
    assert (tmp_path / "m" / "model.safetensors").is_file()
