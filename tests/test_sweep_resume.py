"""Resumable sweeps (skip_finished): the same -m command with the same hydra.sweep.dir, run again after a
stop, runs only the jobs that had not finished; a folder of another config is refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from fgzoom.cli.resume import config_difference
from tests.helpers import run_script, tiny_overrides


def test_config_difference_names_the_first_differing_key_and_ignores_run_bookkeeping():
    saved = {"seed": 1, "ckpt_path": None, "logger": {"a": 1}, "data": {"mean": [0.5], "batch_size": 4},
             "trainer": {"max_epochs": 1}}
    same = {"seed": 1, "ckpt_path": "last", "logger": {"b": 2}, "data": {"mean": "auto", "batch_size": 4},
            "trainer": {"max_epochs": 1}}
    assert config_difference(saved, same) is None
    other = {**same, "trainer": {"max_epochs": 2}}
    assert config_difference(saved, other) == "trainer.max_epochs: 1 vs 2"
    assert config_difference(saved, {**same, "extra": 1}) == "extra: '<missing>' vs 1"


def _sweep_command(sweep, synthetic_root, *extra):
    return ["-m", "hydra/launcher=basic", "model=plain", "seed=1,2", f"hydra.sweep.dir={sweep}",
            *tiny_overrides(synthetic_root), "trainer.max_epochs=3", "figures_every_n_epochs=0", *extra]


@pytest.mark.slow  # a whole train/eval through the scripts: CI runs the slow suite too
def test_a_sweep_run_again_finishes_the_missing_jobs_only(tmp_path, synthetic_root):
    sweep = tmp_path / "sweep"
    args = _sweep_command(sweep, synthetic_root)
    done = run_script("train.py", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    first = sweep / "0" / "metrics.json"
    # job 1 as a kill early in that job leaves it (deterministic, no kill timing): its folder and config, no metrics, no checkpoint
    shutil.rmtree(sweep / "1" / "checkpoints")
    (sweep / "1" / "metrics.json").unlink()
    # what the job computed (Hydra itself rewrites <job>/.hydra and appends to the job's log on every launch)
    finished = {path: path.stat().st_mtime_ns for path in (sweep / "0").rglob("*")
                if path.is_file() and ".hydra" not in path.parts and path.suffix != ".log"}
    assert (sweep / "0" / "config.yaml") in finished and any("checkpoints" in p.parts for p in finished)

    again = run_script("train.py", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished earlier with the same config" in again.stderr + again.stdout
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # job 0 untouched
    second = json.loads((sweep / "1" / "metrics.json").read_text())
    assert 0.0 <= second["test/acc"] <= 1.0
    assert json.loads(first.read_text())["test/acc"] >= 0.0

    changed = run_script("train.py", *_sweep_command(sweep, synthetic_root, "data.batch_size=2"))
    assert changed.returncode != 0
    line = changed.stderr.strip().splitlines()[-1]
    assert line.startswith("error: hydra.sweep.dir: job folder") and "data.batch_size: 4 vs 2" in line
