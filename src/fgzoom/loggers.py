"""A CSV logger whose ``metrics.csv`` survives a resumed run (Lightning's deletes it and starts over)."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


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
