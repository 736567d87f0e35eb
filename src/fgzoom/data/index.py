"""What a dataset reader returns: samples (path, label, box) per split and the class names.

Every reader in :mod:`fgzoom.data.readers` turns a dataset root in its publisher's layout into a
:class:`DatasetIndex`. The datamodule never looks at a dataset's files itself, so one loader path
serves every dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fgzoom.errors import FGZoomError

Box = tuple[float, float, float, float]
"""A ground-truth box ``(y0, x0, y1, x1)`` in pixels of the original image, end-exclusive, float."""


class DatasetLayoutError(FGZoomError, ValueError):
    """A dataset root does not have the expected layout. The message names the first missing path."""


@dataclass(frozen=True)
class Sample:
    """One image: its file, its class index and, when the dataset has one, its ground-truth box."""

    path: Path
    label: int
    box: Box | None = None


@dataclass
class DatasetIndex:
    """The splits of one dataset.

    ``val`` is ``None`` when the dataset has no official validation split; the datamodule then
    holds one out of ``train`` (stratified, seeded).
    """

    classes: list[str]
    train: list[Sample]
    test: list[Sample]
    val: list[Sample] | None = None
    extras: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def splits(self) -> dict[str, list[Sample]]:
        out = {"train": self.train, "test": self.test}
        if self.val is not None:
            out["val"] = self.val
        return out


def require_path(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` if it exists, else raise :class:`DatasetLayoutError` naming it.

    Args:
        path: the file or folder that must exist.
        what: a few words saying what it is ("CUB-200-2011 images.txt").
        hint: where the dataset comes from / what to pass as ``data.root``.
    """
    if not path.exists():
        raise DatasetLayoutError(f"missing {what}: {path} does not exist. {hint}")
    return path
