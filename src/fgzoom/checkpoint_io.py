"""Checkpoint writing that a kill cannot corrupt: write a temporary file beside the target, then rename."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
