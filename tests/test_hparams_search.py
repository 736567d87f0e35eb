"""hparams_search=optuna: the config composes into an Optuna study over keys the zoom model has, train
returns the optimized metric, summarize reads a study folder, and a tiny study runs end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import OmegaConf

from fgzoom.cli.train import check_optimized_metric, optimized_value
from fgzoom.errors import ConfigError
from fgzoom.models.options import config_from
from fgzoom.models.zoom_config import ZoomConfig
from fgzoom.sweeps.expand import expected_jobs
from fgzoom.sweeps.optuna_study import read_study
from fgzoom.sweeps.runs import OK, collect_runs
from fgzoom.sweeps.summarize import summarize
from tests.helpers import compose_config, run_script, tiny_overrides

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
needs_plugin = pytest.mark.skipif(
    not __import__("importlib").util.find_spec("hydra_plugins.hydra_optuna_sweeper"),
    reason='the Optuna sweeper is not installed (pip install -e ".[optuna]")',
)


@needs_plugin
def test_optuna_search_composes_over_keys_the_zoom_model_has(tmp_path):
    cfg = compose_config("train.yaml", ["hparams_search=optuna"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == OPTUNA_SWEEPER
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/acc"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == cfg.seed
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"

    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    space = {o.key_or_group: o.value() for o in parsed}
    assert all(isinstance(v, IntervalSweep) for v in space.values())
    assert set(space) == {
        "model.optimizer.lr",
        "model.optimizer.weight_decay",
        "model.zoom.threshold",
        "model.zoom.padding",
    }
    for key in space:  # each searched key exists in the composed config (a typo would fail every trial)
        parent, _, leaf = key.rpartition(".")
        assert leaf in OmegaConf.select(cfg, parent), key
    zoom = OmegaConf.to_container(cfg.model.zoom, resolve=True)
    for key in ("threshold", "padding"):  # both ends of each zoom range pass the model's own checks
        for bound in (space[f"model.zoom.{key}"].start, space[f"model.zoom.{key}"].end):
            config_from(ZoomConfig, {**zoom, key: bound}, "model.zoom")


def test_optimized_value_is_the_named_metric_and_never_a_test_metric():
    metrics = {"val/acc": 0.5, "val/loss": None, "test/acc": 0.4}
    assert optimized_value(metrics, "val/acc") == 0.5 and isinstance(optimized_value(metrics, "val/acc"), float)
    assert math.isnan(optimized_value(metrics, "val/loss"))  # not finite: Optuna records a failed trial
    assert optimized_value(metrics, None) is None
    with pytest.raises(ConfigError, match=r"optimized_metric=val/acc_zoom: .* val/acc, val/loss"):
        optimized_value(metrics, "val/acc_zoom")
    check_optimized_metric("val/acc")
    check_optimized_metric(None)
    with pytest.raises(ConfigError, match="optimized_metric=test/acc: .*val/"):
        check_optimized_metric("test/acc")


def _trial(sweep: Path, num: int, lr: float, acc: float | None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([f"model.optimizer.lr={lr}", "hparams_search=optuna"]),
                   job / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"_target_": OPTUNA_SWEEPER, "direction": "maximize"}}}),
                   job / ".hydra" / "hydra.yaml")
    zoom = {"level": "feature", "mode": "bilinear", "align_corners": None, "antialias": False}
    OmegaConf.save(OmegaConf.create({"seed": 42, "optimized_metric": "val/acc", "model": {"zoom": zoom}}),
                   job / "config.yaml")
    if acc is not None:
        (job / "metrics.json").write_text(json.dumps({"val/acc": acc, "test/acc": acc - 0.1}))


@pytest.fixture
def optuna_sweep(tmp_path) -> Path:
    """Three trials (the second the best, the third crashed) and the sweeper's optimization_results.yaml."""
    sweep = tmp_path / "sweep"
    _trial(sweep, 0, 0.001, 0.5)
    _trial(sweep, 1, 0.003, 0.75)
    _trial(sweep, 2, 0.0001, None)
    OmegaConf.save(
        OmegaConf.create({"name": "optuna", "best_params": {"model.optimizer.lr": 0.003}, "best_value": 0.75}),
        sweep / "optimization_results.yaml",
    )
    return sweep


def test_an_optuna_study_has_no_expected_jobs(optuna_sweep, tmp_path):
    assert expected_jobs(optuna_sweep) is None
    grid_like = tmp_path / "with_multirun_yaml"  # an Optuna multirun.yaml, had one been written
    grid_like.mkdir()
    OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"_target_": OPTUNA_SWEEPER,
                                                           "params": {"model.optimizer.lr": "interval(0.1, 1)"}}}}),
                   grid_like / "multirun.yaml")
    assert expected_jobs(grid_like) is None


def test_summarize_reads_an_optuna_study(optuna_sweep):
    runs = collect_runs(optuna_sweep)
    assert [(r.job, r.status) for r in runs] == [("0", OK), ("1", OK), ("2", "no metrics.json")]
    study = read_study(optuna_sweep, runs)
    assert study.metric == "val/acc" and study.direction == "maximize"
    assert study.params == ["model.optimizer.lr"] and study.best_jobs == ["1"] and study.best_value == 0.75

    paths = summarize(optuna_sweep)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["job"] for r in rows] == ["0", "1", "2"]  # one row per trial, none "not started"
    md = paths["md"].read_text()
    assert "Objective: maximize `val/acc` (optimized_metric); 3 trials, 2 with a value. Accuracy in %." in md
    assert "Best trial (optimization_results.yaml): job **1**, val/acc = 75.0; `model.optimizer.lr=0.003`." in md
    trials = md.split("## Optuna study")[1].split("## Settings")[0]
    assert "| **1 (best)** | 1 | ok | 0.003 | 75.0 | 65.0 |" in trials
    assert "| 2 | 0 | ok | 0.001 | 50.0 | 40.0 |" in trials
    assert "| – | 2 | no metrics.json | 0.0001 | – | – |" in trials
    assert "Best setting by mean val/acc" not in md  # the study names its best trial itself


@needs_plugin
@pytest.mark.slow  # a whole train/eval through the scripts: CI runs the slow suite too
def test_tiny_optuna_study_end_to_end(tmp_path, synthetic_root):
    """Two trials through scripts/train.py (no -m: the config sets multirun) into <PROJECT_ROOT>/logs, kept in
    a SQLite study storage, then scripts/summarize.py on the study folder; a second call with the same storage
    and study name resumes the study with a third trial."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = [
        "hparams_search=optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=tiny",
        *tiny_overrides(synthetic_root),
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "++figures_every_n_epochs=0",
    ]
    # the default sweep folder, under paths.log_dir
    result = run_script("train.py", *study, "hydra.sweeper.n_trials=2", env={"PROJECT_ROOT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == {"model.optimizer.lr", "model.optimizer.weight_decay",
                                        "model.zoom.threshold", "model.zoom.padding"}
    for num in range(2):
        assert (sweep / str(num) / "metrics.json").is_file()

    result = run_script("summarize.py", str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert len(rows) == 2 and {r["status"] for r in rows} == {OK}
    md = (sweep / "results.md").read_text()
    assert "Best trial (optimization_results.yaml): job **" in md and "(best)** |" in md

    resumed = run_script("train.py", *study, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    import optuna

    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state.name == "COMPLETE" for t in trials)


def test_a_diverged_trial_is_nan_for_the_sweeper_and_an_error_otherwise(tmp_path, synthetic_root, monkeypatch):
    """A trial whose loss turns NaN (a high lr in the search) must not end the study."""
    from fgzoom.cli.train import objective
    from fgzoom.errors import NonFiniteLossError
    from fgzoom.models.module import FGVCModule

    forward = FGVCModule.forward

    def diverging(self, images, **options):
        out = forward(self, images, **options)
        return {**out, "logits_raw": out["logits_raw"] * float("nan")} if self.training else out

    monkeypatch.setattr(FGVCModule, "forward", diverging)
    overrides = [*tiny_overrides(synthetic_root), "model=plain", "figures_every_n_epochs=0"]
    value = objective(compose_config("train.yaml", [*overrides, "+optimized_metric=val/acc"], tmp_path / "trial"))
    assert math.isnan(value)
    with pytest.raises(NonFiniteLossError):
        objective(compose_config("train.yaml", overrides, tmp_path / "single"))
