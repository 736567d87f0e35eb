"""Figures reach every logger that takes images (TensorBoard, MLflow, W&B), and no other."""

from __future__ import annotations

from unittest import mock

import pytest
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure

from fgzoom.loggers import log_figure


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

