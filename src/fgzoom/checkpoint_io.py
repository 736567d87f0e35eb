"""File writing that a kill cannot corrupt (checkpoints, metrics.json): a temporary file beside the
target, flushed to disk, then renamed over it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


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
