"""Checkpoint files: writing that a kill cannot corrupt (checkpoints, metrics.json: a temporary file beside
the target, flushed to disk, then renamed over it), and reading an fgzoom checkpoint back for eval and predict
(its ``fgzoom`` entry, the model, a check of its class names), each failure one ``ConfigError`` line."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fgzoom.errors import ConfigError
from fgzoom.model_folder import is_model_folder, load_model_folder, read_folder_meta
from fgzoom.models.module import FGVCModule


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """Yield a binary file to write ``path``'s new content into; on success it is flushed to disk and
    renamed over ``path`` (``os.replace``, atomic on one filesystem), on an error it is removed, so
    ``path`` always holds either its old content or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but a local checkpoint is written to ``.<name>.tmp`` in the same
    folder, flushed to disk and renamed over the target (``os.replace`` is atomic on one filesystem).

    A SIGKILL during a save therefore leaves the previous ``last.ckpt`` intact. (Lightning's own writer
    stages the bytes in the system temp folder and moves them, which becomes a copy that can be cut
    short whenever that folder is on another filesystem.) Remote URLs go through Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_write(Path(path)) as f:
            torch.save(checkpoint, f)


def read_checkpoint_meta(path: str) -> dict:
    """The ``fgzoom`` entry of the checkpoint at ``path``: ``class_names``, ``config`` (the run's resolved
    config) and ``progress``; ``path`` may also be a model folder (``fgzoom.model_folder``). Raises ConfigError when
    it is not a readable fgzoom checkpoint."""
    if is_model_folder(path):
        return read_folder_meta(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    meta = checkpoint.get("fgzoom") if isinstance(checkpoint, dict) else None
    if not meta or "hyper_parameters" not in checkpoint:
        raise ConfigError(f"ckpt_path={path}: not an fgzoom checkpoint (no model config inside)")
    return meta


def load_model(path: str) -> FGVCModule:
    """Rebuild the LightningModule stored in ``path`` on the CPU (no pretrained download: the weights come
    from the file; ``path`` may also be a model folder). Raises ConfigError when the weights do not fit the model
    the checkpoint describes."""
    if is_model_folder(path):
        return load_model_folder(path)
    try:
        return FGVCModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise ConfigError(f"ckpt_path={path}: does not match the model it describes ({first})") from e


def check_class_names(path: str, trained: Sequence[str] | None, other: Sequence[str], what: str) -> None:
    """Raise a one-line ConfigError when the checkpoint's class names ``trained`` differ from ``other`` (the
    class names of ``what``, e.g. the data); None (a checkpoint without names) passes."""
    if trained is not None and list(trained) != list(other):
        raise ConfigError(
            f"ckpt_path={path}: trained on {len(trained)} classes ({list(trained)[:3]}...), {what} has "
            f"{len(other)} ({list(other)[:3]}...); pass the data it was trained on"
        )
