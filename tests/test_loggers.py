"""logger=mlflow and logger=wandb: short training runs that leave metrics and figures in a local store inside
the run folder, figures sent to every logger that takes images, and one clear line for a missing package."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from unittest import mock

import pytest
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure

from fgzoom.callbacks.loggers import log_figure
from fgzoom.cli.evaluate import evaluate
from fgzoom.cli.runtime import instantiate_loggers
from fgzoom.cli.train import train
from fgzoom.errors import ConfigError
from tests.helpers import ROOT, SCRIPT_ENV, compose_config, script_command, tiny_overrides


def _figure() -> Figure:
    fig = Figure(figsize=(2, 1), dpi=50)
    fig.add_subplot().plot([0, 1])
    return fig


# the real loggers need their packages and write files; their calls are what log_figure promises
IMAGE_LOGGERS = {
    "tensorboard": lambda logger, fig: logger.experiment.add_figure.assert_called_once_with(
        "figures/zoom_grid", fig, global_step=7, close=False
    ),
    "mlflow": lambda logger, fig: logger.experiment.log_figure.assert_called_once_with(
        logger.run_id, fig, "figures/zoom_grid/step_000007.png"
    ),
    "wandb": lambda logger, fig: logger.log_image.assert_called_once_with(key="figures/zoom_grid", images=[fig], step=7),
}
LOGGER_CLASSES = {"tensorboard": TensorBoardLogger, "mlflow": MLFlowLogger, "wandb": WandbLogger}


@pytest.mark.parametrize("kind", sorted(IMAGE_LOGGERS))
def test_log_figure_reaches_each_logger_that_takes_images(kind, tmp_path):
    fig = _figure()
    logger = mock.create_autospec(LOGGER_CLASSES[kind], instance=True)
    assert log_figure([CSVLogger(tmp_path / "csv"), logger], fig, step=7) == 1
    IMAGE_LOGGERS[kind](logger, fig)
    assert not (tmp_path / "csv").exists()  # the CSV logger is left alone


def test_log_figure_counts_every_image_logger_and_skips_csv(tmp_path):
    fig = _figure()
    loggers = {kind: mock.create_autospec(cls, instance=True) for kind, cls in LOGGER_CLASSES.items()}
    assert log_figure([CSVLogger(tmp_path / "csv"), *loggers.values()], fig, step=7) == 3
    for kind, logger in loggers.items():
        IMAGE_LOGGERS[kind](logger, fig)
    assert log_figure([CSVLogger(tmp_path / "csv")], fig, step=7) == 0
    assert log_figure([], fig, step=7) == 0


def _unavailable(base: type) -> type:
    """A logger class of ``base``'s family whose constructor fails as Lightning's does without the package."""

    class Unavailable(base):
        def __init__(self, *args, **kwargs) -> None:
            raise ModuleNotFoundError(f"{base.__name__} needs a package that is not installed")

    return Unavailable


UnavailableTensorBoard = _unavailable(TensorBoardLogger)
UnavailableMLFlow = _unavailable(MLFlowLogger)
UnavailableWandb = _unavailable(WandbLogger)
UNAVAILABLE = {"tensorboard": "UnavailableTensorBoard", "mlflow": "UnavailableMLFlow", "wandb": "UnavailableWandb"}


@pytest.mark.parametrize("option", sorted(UNAVAILABLE))
def test_a_missing_logger_package_is_one_clear_line(option, tmp_path):
    """A logger whose package is missing (its constructor raises ModuleNotFoundError, as Lightning's loggers do)
    is one line naming the extra; holds whether or not the package is installed here."""
    cfg = compose_config("train.yaml", [f"logger={option}"], tmp_path)
    cfg.logger[option] = {"_target_": f"tests.test_loggers.{UNAVAILABLE[option]}"}
    expected = f"logger={option} needs {option}: pip install -e '.[{option}]'"
    with pytest.raises(ConfigError) as raised:
        instantiate_loggers(cfg.logger)
    assert str(raised.value) == expected


def test_mlflow_sqlite_store_without_sqlalchemy_is_the_same_line(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sqlalchemy" else find_spec(name, *a))
    cfg = compose_config("train.yaml", ["logger=mlflow"], tmp_path)
    with pytest.raises(ConfigError, match=r"^logger=mlflow needs mlflow: pip install -e '\.\[mlflow\]'$"):
        instantiate_loggers(cfg.logger)


@pytest.mark.slow  # 7 s: the fast suite keeps to its time budget
def test_train_and_eval_with_mlflow_leave_metrics_and_figures_in_the_run_folder(tmp_path, synthetic_root, monkeypatch):
    pytest.importorskip("mlflow", reason="pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    cwd_store = Path.cwd() / "mlruns"
    had_cwd_store = cwd_store.exists()
    run = tmp_path / "run"
    metrics = train(compose_config("train.yaml", [*tiny_overrides(synthetic_root), "logger=mlflow"], run))

    uri = f"sqlite:///{run / 'mlflow.db'}"
    client = MlflowClient(uri)
    (trained,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert trained.info.status == "FINISHED" and trained.data.tags["run_dir"] == str(run)
    assert trained.data.metrics["val/acc"] == pytest.approx(metrics["val/acc"])
    assert client.get_metric_history(trained.info.run_id, "test/acc")
    figures = [a.path for a in client.list_artifacts(trained.info.run_id, "figures/zoom_grid")]
    assert figures and all(path.endswith(".png") for path in figures)
    assert list((run / "mlartifacts").rglob("step_*.png"))  # the artifacts live in the run folder
    assert cwd_store.exists() == had_cwd_store  # nothing written to ./mlruns

    # eval with a given tracking URI (here the training run's store): the confusion matrix reaches it too
    eval_cfg = compose_config(
        "eval.yaml",
        [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "trainer=cpu", "logger=mlflow",
         f"logger.mlflow.tracking_uri={uri}", "eval.num_images=2"],
        tmp_path / "eval",
    )
    eval_metrics = evaluate(eval_cfg)
    (evaluated,) = client.search_runs([client.get_experiment_by_name("eval").experiment_id])
    assert evaluated.data.metrics["test/acc"] == pytest.approx(eval_metrics["test/acc"])
    paths = {a.path for folder in ("figures/confusion_matrix", "figures/eval_grid")
             for a in client.list_artifacts(evaluated.info.run_id, folder)}
    assert paths == {"figures/confusion_matrix/step_000000.png", "figures/eval_grid/step_000000.png"}
    assert not (tmp_path / "eval" / "mlflow.db").exists()  # the given store replaced the local one


@pytest.mark.slow  # a whole training run through the script, with W&B's service process
def test_train_with_wandb_offline_writes_the_run_folder_without_network(tmp_path, synthetic_root):
    """Run like a user, with no stdin (a login prompt would fail, not wait), no W&B credentials and a server
    address that refuses connections; the run must finish quickly and leave an offline run to sync."""
    pytest.importorskip("wandb", reason="pip install -e '.[wandb]'")
    run = tmp_path / "run"
    env = {k: v for k, v in SCRIPT_ENV.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens there
        WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"),
        WANDB_DATA_DIR=str(tmp_path / "wandb_data"),
        NETRC=os.devnull,
    )
    result = subprocess.run(
        script_command("train.py", *tiny_overrides(synthetic_root), "logger=wandb", f"hydra.run.dir={run}"),
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (offline,) = (run / "wandb").glob("offline-run-*")
    (transactions,) = offline.glob("run-*.wandb")
    assert b"val/acc" in transactions.read_bytes()  # the history records name the metrics
    assert list((offline / "files" / "media" / "images" / "figures").glob("zoom_grid_*.png"))
    assert "wandb sync" in result.stdout + result.stderr
