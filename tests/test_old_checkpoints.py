"""Checkpoints written by earlier code still load and evaluate to the same numbers.

``fixtures/checkpoint_5979749/`` was made by the code at commit 5979749, before the package was regrouped
(``fgzoom.train`` -> ``fgzoom.cli.train``, ``fgzoom.checkpoint_io`` -> ``fgzoom.checkpoints.io``, ...):

    python scripts/train.py model.backbone.name=test_resnet trainer.max_epochs=2 <tiny_overrides of conftest>
    python scripts/eval.py ckpt_path=<run>/checkpoints/last.ckpt trainer=cpu

``last.ckpt`` is that run's checkpoint with its optimizer state removed (eval does not read it; 1.6 MB
instead of 4.7 MB); ``metrics.json`` and ``test_predictions.csv`` are what that eval wrote. Its zoom names
``sampler=affine``, the grid_sample sampler's name before the continuous sampler became the default.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from fgzoom.checkpoints.io import load_model, read_checkpoint, read_checkpoint_meta
from fgzoom.cli.evaluate import evaluate
from tests.helpers import compose_config, tiny_overrides

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_5979749"


def _predictions(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k != "path"} for row in csv.DictReader(f)]


def test_a_checkpoint_from_before_the_package_move_evaluates_to_its_old_metrics(synthetic_root, tmp_path):
    data = [o for o in tiny_overrides(synthetic_root) if o.startswith("data.")]
    overrides = [f"ckpt_path={FIXTURE / 'last.ckpt'}", "data=synthetic", *data, "trainer=cpu", "logger=none"]
    metrics = evaluate(compose_config("eval.yaml", overrides, tmp_path / "eval"))
    expected = json.loads((FIXTURE / "metrics.json").read_text())
    # MaxBoxAccV2 and the box-centre error came later; the checkpoint holds no val thresholds, so no
    # boxacc_v2@val_tau
    newer = {f"test/{name}" for name in ("maxboxacc_v2", "maxboxacc@0.3", "maxboxacc@0.5", "maxboxacc@0.7",
                                         "box_dy", "box_dx", "box_center_err")}
    assert metrics.keys() == expected.keys() | newer
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-5), key
    assert _predictions(tmp_path / "eval" / "test_predictions.csv") == _predictions(FIXTURE / "test_predictions.csv")


def test_a_checkpoint_from_before_the_package_move_rebuilds_the_same_model():
    path = str(FIXTURE / "last.ckpt")
    meta = read_checkpoint_meta(path)
    model = load_model(path)
    assert read_checkpoint(path)["hyper_parameters"]["zoom"]["sampler"] == "affine"
    assert model.net.config.sampler == "grid_sample"  # the old name, read as what it always was
    assert model.hparams.class_names == meta["class_names"]
    saved = read_checkpoint(path)["state_dict"]
    state = model.state_dict()
    # the one new entry: the cell offset, which a checkpoint from before it existed loads as 0 (the resize rule)
    assert state.keys() - saved.keys() == {"net.cell_offset"} and saved.keys() <= state.keys()
    assert torch.equal(state["net.cell_offset"], torch.zeros(2)) and model.net.offset == (0.0, 0.0)
    assert all(torch.equal(state[k], saved[k]) for k in saved)
