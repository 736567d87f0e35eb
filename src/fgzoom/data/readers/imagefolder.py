"""Any dataset in ImageFolder layout: ``root/{train,test}[/val]/<class>/<image>``.

An optional ``root/boxes.csv`` with header ``path,y0,x0,y1,x1`` (path relative to ``root``, pixels of
the original image, end-exclusive) gives ground-truth boxes of the discriminative part.
"""

from __future__ import annotations

import csv
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from fgzoom.data.index import Box, DatasetIndex, DatasetLayoutError, Sample, require_path

BOXES_FILE = "boxes.csv"
HINT = "Expected data.root/train/<class>/*.jpg and data.root/test/<class>/*.jpg (val/ optional)."


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_boxes_csv(path: Path) -> dict[str, Box]:
    """Read ``path,y0,x0,y1,x1`` rows into ``{relative path: box}``."""
    boxes: dict[str, Box] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        expected = ["path", "y0", "x0", "y1", "x1"]
        if reader.fieldnames != expected:
            raise DatasetLayoutError(f"{path}: header must be {','.join(expected)}, got {reader.fieldnames}")
        for row in reader:
            boxes[row["path"]] = (float(row["y0"]), float(row["x0"]), float(row["y1"]), float(row["x1"]))
    return boxes


def _split_samples(root: Path, split: str, class_to_idx: dict[str, int], boxes: dict[str, Box]) -> list[Sample]:
    split_dir = root / split
    samples: list[Sample] = []
    for name in _class_folders(split_dir):
        if name not in class_to_idx:
            raise DatasetLayoutError(
                f"{split_dir / name}: class folder not present in {root / 'train'}; every class needs training images"
            )
        for path in sorted((split_dir / name).iterdir()):
            if path.suffix.lower() in IMG_EXTENSIONS:
                rel = path.relative_to(root).as_posix()
                samples.append(Sample(path, class_to_idx[name], boxes.get(rel)))
    if not samples:
        raise DatasetLayoutError(f"no images found under {split_dir}. {HINT}")
    return samples


def read_imagefolder(root: str | Path) -> DatasetIndex:
    """Index an ImageFolder-layout dataset. Raises :class:`DatasetLayoutError` naming what is missing."""
    root = Path(root).expanduser()
    require_path(root, "dataset root (data.root)", HINT)
    require_path(root / "train", "training split folder", HINT)
    require_path(root / "test", "test split folder", HINT)
    classes = _class_folders(root / "train")
    if not classes:
        raise DatasetLayoutError(f"no class folders in {root / 'train'}. {HINT}")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    boxes = read_boxes_csv(root / BOXES_FILE) if (root / BOXES_FILE).exists() else {}
    val = _split_samples(root, "val", class_to_idx, boxes) if (root / "val").is_dir() else None
    return DatasetIndex(
        classes=classes,
        train=_split_samples(root, "train", class_to_idx, boxes),
        test=_split_samples(root, "test", class_to_idx, boxes),
        val=val,
    )
