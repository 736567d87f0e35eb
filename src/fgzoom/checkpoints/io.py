"""Checkpoint files: writing that a kill cannot corrupt (checkpoints, metrics.json: a temporary file beside
the target, flushed to disk, then renamed over it), and reading an fgzoom checkpoint back for eval, predict,
export, save_model and resume (its ``fgzoom`` entry, the model, a check of its class names), each failure one
``ConfigError`` line.

Reading never runs code from the file: every read goes through torch's weights-only unpickler
(``torch.load(..., weights_only=True)``), which rebuilds tensors, containers and plain values only, with the
few harmless types in ``SAFE_GLOBALS`` allowed by name. A file that needs anything else (a pickled object
whose loading would call a function) is refused in one line that names what it holds; ``trust_checkpoint=true``
reads it with the full unpickler, for files the user made with code of their own (docs/deploy.md, "What is safe
to load").
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import math
import os
import pathlib
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fgzoom.checkpoints.model_folder import is_model_folder, load_model_folder, read_folder_meta
from fgzoom.data.datamodule import FGVCDataModule
from fgzoom.errors import ConfigError
from fgzoom.models.module import FGVCModule

log = logging.getLogger(__name__)

# Types besides tensors and plain containers that checkpoints of Lightning and of older fgzoom versions hold,
# allowed by name in the weights-only reader: each only stores values (paths, namespaces, a dict subclass).
SAFE_GLOBALS: list[type] = [
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    argparse.Namespace,  # hyperparameters saved from argparse (Lightning's and timm's older scripts)
    AttributeDict,  # Lightning's hparams container
]
TRUST_KEY = "trust_checkpoint"


def trusts_checkpoints(cfg: Mapping) -> bool:
    """Whether the entry's config opts in to the full unpickler (``trust_checkpoint=true``; default false)."""
    return bool(cfg.get(TRUST_KEY, False))


@contextlib.contextmanager
def safe_checkpoint_types() -> Iterator[None]:
    """Allow ``SAFE_GLOBALS`` in every weights-only ``torch.load`` inside the block (Lightning's own reads of a
    resumed or tested checkpoint included)."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        yield


def _unsafe_globals(path: str) -> list[str]:
    """The names a file's pickle would call or build beyond what the weights-only reader allows."""
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in SAFE_GLOBALS}
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint: the reader's own message is all there is
        return []
    return [name for name in names if name not in allowed]


def read_checkpoint(path: str, trust: bool = False, mmap: bool = False) -> dict:
    """The checkpoint dict at ``path``, read on the CPU with torch's weights-only unpickler (no code from the
    file runs). ``trust``: the full unpickler instead, with a warning (``trust_checkpoint=true``, for files the
    user made). ``mmap``: map the tensors instead of reading them (cheap reads of the small entries).

    Raises:
        ConfigError: the file is not a readable checkpoint, or it holds objects the weights-only reader
            refuses (named in the message).
    """
    if trust:
        log.warning("%s=true: reading %s with the full unpickler, which runs any code the file holds; use it only "
                    "for checkpoints you made yourself", TRUST_KEY, path)
    try:
        if trust:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        else:
            with safe_checkpoint_types():
                checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if trust or "weights only load failed" not in str(e).lower():  # a damaged file, not a refusal
            raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:200]})") from e
        held = _unsafe_globals(path)
        what = f" ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''})" if held else ""
        raise ConfigError(
            f"ckpt_path={path}: refused, the file holds pickled objects that would run code when loaded{what}; "
            f"fgzoom reads checkpoints weights-only. If you made this file yourself, pass {TRUST_KEY}=true"
        ) from None
    except Exception as e:
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from e
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"ckpt_path={path}: not a checkpoint (holds a {type(checkpoint).__name__}, not a dict)")
    return checkpoint


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


def _fgzoom_checkpoint(path: str, trust: bool, mmap: bool) -> dict:
    """``read_checkpoint`` of a file that must be an fgzoom checkpoint (``fgzoom``, ``hyper_parameters`` and
    ``state_dict`` entries, the first a mapping)."""
    checkpoint = read_checkpoint(path, trust=trust, mmap=mmap)
    if not checkpoint.get("fgzoom") or "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path={path}: not an fgzoom checkpoint (no model config inside)")
    if not isinstance(checkpoint["fgzoom"], dict):
        raise ConfigError(f"ckpt_path={path}: not an fgzoom checkpoint (its fgzoom entry is not a mapping)")
    return checkpoint


def read_checkpoint_meta(path: str, trust: bool = False) -> dict:
    """The ``fgzoom`` entry of the checkpoint at ``path``: ``class_names``, ``config`` (the run's resolved
    config), ``progress`` and ``val_box_tau`` (absent in files saved before it); ``path`` may also be a model
    folder (``fgzoom.checkpoints.model_folder``). Raises ConfigError when it is not a readable fgzoom checkpoint
    (``read_checkpoint``; ``trust``: ``trust_checkpoint=true``)."""
    if is_model_folder(path):
        return read_folder_meta(path)
    return _fgzoom_checkpoint(path, trust, mmap=True)["fgzoom"]


def load_model(path: str, trust: bool = False) -> FGVCModule:
    """Rebuild the LightningModule stored in ``path`` on the CPU from the values the checkpoint holds
    (``FGVCModule.from_saved``: no pretrained download, the weights come from the file; ``path`` may also be a
    model folder). Raises ConfigError when the file is refused (``read_checkpoint``) or its weights do not fit
    the model it describes."""
    if is_model_folder(path):
        return load_model_folder(path)
    checkpoint = _fgzoom_checkpoint(path, trust, mmap=False)
    return FGVCModule.from_saved(checkpoint["hyper_parameters"], checkpoint["state_dict"],
                                 checkpoint["fgzoom"].get("progress", 1.0),
                                 source=f"ckpt_path={path}", val_box_tau=checkpoint["fgzoom"].get("val_box_tau"))


def check_resumable(path: str | None, trust: bool = False) -> None:
    """Before Lightning reads ``path`` to resume (or to validate it with ``train=false``): a model folder is
    refused (it holds weights, not the training state), and so is a file the weights-only reader refuses, in
    one line each, instead of Lightning's traceback."""
    if path is None:
        return
    if is_model_folder(path):
        raise ConfigError(f"ckpt_path={path}: a model folder holds the weights only, not a training state to "
                          "resume; pass a checkpoint such as <run>/checkpoints/last.ckpt")
    read_checkpoint(path, trust=trust, mmap=True)


DATAMODULE_TARGET = "fgzoom.data.datamodule.FGVCDataModule"


def _normalization(value: Any, key: str, path: str) -> Any:
    """A saved ``mean``/``std``: None, ``auto`` or three finite numbers (as floats); else one ConfigError line."""
    if value is None or value == "auto":
        return value
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"ckpt_path={path}: its saved data.{key} is not three numbers; pass data.{key}=[r,g,b]")
    return numbers


def saved_data_config(meta: dict, path: str, strict: bool = True) -> dict:
    """The run's ``data`` config saved in a checkpoint or model folder (``meta``: :func:`read_checkpoint_meta`),
    as plain values for ``FGVCDataModule``, without its ``_target_`` ({} when there is none). Nothing named in it
    is imported or called: a ``_target_`` other than fgzoom's datamodule is ignored with a warning, ``mean`` and
    ``std`` must be numbers, and with ``strict`` (the values will build the datamodule) a key ``FGVCDataModule``
    does not take is refused.

    Raises:
        ConfigError: the saved data config is not a mapping, has bad ``mean``/``std``, or (``strict``) holds
            keys of another class.
    """
    config = meta.get("config") or {}
    data = config.get("data") if isinstance(config, dict) else None
    if not data:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"ckpt_path={path}: its saved data config is not a mapping; pass data=<name> data.root=...")
    target = data.get("_target_", DATAMODULE_TARGET)
    if target != DATAMODULE_TARGET:
        log.warning("ckpt_path=%s: its saved data config names _target_=%r; ignored, fgzoom reads the values "
                    "for its own %s and never builds a class a checkpoint or model folder names",
                    path, target, DATAMODULE_TARGET)
    values = {str(k): v for k, v in data.items() if not str(k).startswith("_")}
    for key in ("mean", "std"):
        if key in values:
            values[key] = _normalization(values[key], key, path)
    unknown = sorted(set(values) - (set(inspect.signature(FGVCDataModule.__init__).parameters) - {"self"}))
    if strict and unknown:
        raise ConfigError(f"ckpt_path={path}: its saved data config holds keys fgzoom's datamodule does not take "
                          f"({', '.join(unknown[:4])}); pass data=<name> data.root=... on the command line")
    return values


def saved_transform_config(meta: dict, path: str) -> dict:
    """The saved data values the eval transform needs (predict, export): :func:`saved_data_config` without the
    strict key check (other keys are not used), refused in one line when ``image_size`` is missing."""
    data = saved_data_config(meta, path, strict=False)
    if "image_size" not in data:
        raise ConfigError(f"ckpt_path={path}: its saved data config has no image_size, so the eval transform is "
                          "unknown; rebuild the model folder with scripts/save_model.py from the checkpoint")
    return data


def check_class_names(path: str, trained: Sequence[str] | None, other: Sequence[str], what: str) -> None:
    """Raise a one-line ConfigError when the checkpoint's class names ``trained`` differ from ``other`` (the
    class names of ``what``, e.g. the data); None (a checkpoint without names) passes."""
    if trained is not None and list(trained) != list(other):
        raise ConfigError(
            f"ckpt_path={path}: trained on {len(trained)} classes ({list(trained)[:3]}...), {what} has "
            f"{len(other)} ({list(other)[:3]}...); pass the data it was trained on"
        )
