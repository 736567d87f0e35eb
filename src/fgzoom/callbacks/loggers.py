"""What fgzoom adds to Lightning's loggers: a CSV logger whose ``metrics.csv`` survives a resumed run, an
MLflow logger whose local store keeps its artifacts beside it, figures sent to every logger that takes
images, and loggers finalized when a run of fgzoom ends."""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SQLITE_PREFIX = "sqlite:///"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is kept and appended to: its header seeds
    the known columns, and new columns rewrite the file with the union header (Lightning's own logic)."""

    def _check_log_dir_exists(self) -> None:  # called by __init__ in place of "warn and delete"
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` with the same arguments and files; a run resumed into the
    same folder (``ckpt_path=last``) appends its rows to ``<save_dir>/<name>/<version>/metrics.csv``.
    Rows of an interrupted epoch that were flushed before the kill appear again when it is replayed."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class LocalStoreMLFlowLogger(MLFlowLogger):
    """``lightning.pytorch.loggers.MLFlowLogger`` with the same arguments. With a SQLite store
    (``tracking_uri=sqlite:///<folder>/mlflow.db``) and ``artifact_location=None``, a new experiment keeps its
    artifacts in ``<folder>/mlartifacts`` (MLflow's own default is ``./mlruns`` under the current directory);
    any other store (a tracking server) decides itself where artifacts go.

    Raises:
        ModuleNotFoundError: a SQLite store without ``sqlalchemy`` and ``alembic`` (``mlflow-skinny`` lacks
            them; the ``mlflow`` extra installs them).
    """

    def __init__(self, *, tracking_uri: str | None = None, artifact_location: str | None = None, **kwargs) -> None:
        if tracking_uri is not None and tracking_uri.startswith(SQLITE_PREFIX):
            missing = [m for m in ("sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
            if missing:
                raise ModuleNotFoundError(f"mlflow's SQLite store needs {' and '.join(missing)}")
            if artifact_location is None:
                database = Path(tracking_uri[len(SQLITE_PREFIX):]).resolve()
                artifact_location = (database.parent / "mlartifacts").as_uri()
        if tracking_uri is not None:  # else Lightning's default: $MLFLOW_TRACKING_URI, or ./mlruns
            kwargs["tracking_uri"] = tracking_uri
        super().__init__(artifact_location=artifact_location, **kwargs)


def log_figure(loggers: Iterable[Logger], fig: Figure, step: int, tag: str = "figures/zoom_grid") -> int:
    """Send ``fig`` to every logger in ``loggers`` that takes images: TensorBoard (``add_figure`` under
    ``tag``), MLflow (the artifact ``<tag>/step_<step>.png`` of its run) and W&B (``log_image`` under ``tag``).
    Others (CSV) are left alone. Returns how many got it."""
    sent = 0
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, fig, global_step=step, close=False)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_figure(logger.run_id, fig, f"{tag}/step_{step:06d}.png")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[fig], step=step)
        else:
            continue
        sent += 1
    return sent


def finalize_loggers(loggers: Iterable[Logger]) -> None:
    """Finalize every logger in ``loggers`` once more (what Lightning does after each stage; an MLflow run that
    got metrics after the last stage is marked finished) and end the W&B run, which Lightning leaves open
    until the process exits: its files are complete now, and the next run in this process (a sweep job)
    starts a run of its own."""
    loggers = list(loggers)
    for logger in loggers:
        logger.finalize("success")
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()
