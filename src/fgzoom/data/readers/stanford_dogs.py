"""Stanford Dogs in the layout of ``images.tar``, ``annotation.tar`` and ``lists.tar``.

``data.root`` holds the three extracted archives::

    root/
      Images/<wnid>-<breed>/<wnid>_<n>.jpg
      Annotation/<wnid>-<breed>/<wnid>_<n>      Pascal-VOC-style XML, no extension
      train_list.mat  test_list.mat             file_list, annotation_list, labels (1-based)

``lists/train_list.mat`` and the Kaggle nesting ``images/Images`` and ``annotations/Annotation`` are
accepted too. Class names are the breed part of the folder name (``n02085620-Chihuahua`` ->
``Chihuahua``), indexed by the 1-based ``labels`` minus one.

Boxes: a VOC ``<bndbox>`` is 1-based and inclusive, so ``(xmin, ymin, xmax, ymax)`` becomes
``(ymin - 1, xmin - 1, ymax, xmax)`` (lower edges clamped at 0). Some images show several dogs (all of
the image's breed); ``box_mode`` picks ``union`` (default: the smallest box holding
every annotated dog, so the whole class evidence is inside), ``first`` or ``largest``.
There is no official validation split.

:func:`read_voc_boxes` also reads the Oxford-IIIT Pet head boxes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from fgzoom.data.index import Box, DatasetIndex, DatasetLayoutError, Sample, require_path
from fgzoom.data.readers.common import no_download_hint
from fgzoom.errors import ConfigError

HINT = (
    "Download images.tar, annotation.tar and lists.tar from http://vision.stanford.edu/aditya86/ImageNetDogs/, "
    "extract them into one folder and pass data.root=/path/to/that/folder"
)
BOX_MODES = ("union", "first", "largest")


def read_voc_boxes(path: Path) -> list[Box]:
    """Return every ``<object><bndbox>`` of a VOC XML file as ``(y0, x0, y1, x1)``, end-exclusive.

    VOC coordinates are 1-based and inclusive: ``(ymin - 1, xmin - 1, ymax, xmax)``, clamped at 0.
    """
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        raise DatasetLayoutError(
            f"{path}: not a valid annotation XML ({e}); re-extract the annotation archive"
        ) from e
    boxes: list[Box] = []
    for bb in tree.getroot().iter("bndbox"):
        try:
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as e:
            raise DatasetLayoutError(f"{path}: <bndbox> needs numeric xmin, ymin, xmax, ymax ({e})") from e
        boxes.append((max(0.0, y0 - 1), max(0.0, x0 - 1), y1, x1))
    return boxes


def combine_boxes(boxes: list[Box], mode: str) -> Box | None:
    """Reduce several boxes of one image to one: ``union``, ``first`` or ``largest`` (by area)."""
    if not boxes:
        return None
    if mode == "first":
        return boxes[0]
    if mode == "largest":
        return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _first_dir(root: Path, candidates: tuple[str, ...]) -> Path:
    for rel in candidates:
        if (root / rel).is_dir():
            return root / rel
    return root / candidates[0]


def _first_file(root: Path, candidates: tuple[str, ...]) -> Path:
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    return root / candidates[0]


def _read_list(path: Path) -> tuple[list[str], list[str], list[int]]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True)
        files = [str(f) for f in np.atleast_1d(mat["file_list"])]
        annos = [str(a) for a in np.atleast_1d(mat["annotation_list"])]
        labels = [int(v) for v in np.atleast_1d(mat["labels"])]
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise DatasetLayoutError(
            f"{path}: expected a .mat with file_list, annotation_list and labels ({type(e).__name__}: {e}); "
            "use train_list.mat/test_list.mat from lists.tar"
        ) from e
    if not (len(files) == len(annos) == len(labels)) or not files:
        raise DatasetLayoutError(
            f"{path}: file_list, annotation_list and labels are empty or of different lengths"
        )
    return files, annos, labels


def read_stanford_dogs(root: str | Path, box_mode: str = "union", download: bool = False) -> DatasetIndex:
    """Index Stanford Dogs at ``root``; see the module docstring for the layout and box choice.

    Args:
        box_mode: how several dog boxes of one image become one: ``union``, ``first`` or ``largest``.
        download: exists only to say that Stanford Dogs cannot be downloaded automatically.
    """
    if box_mode not in BOX_MODES:
        raise ConfigError(f"data.reader_options.box_mode={box_mode!r}: must be one of {BOX_MODES}")
    root = Path(root).expanduser()
    hint = no_download_hint(HINT, download, "Stanford Dogs")
    require_path(root, "Stanford Dogs root (data.root)", hint)
    lists = {s: _first_file(root, (f"{s}_list.mat", f"lists/{s}_list.mat")) for s in ("train", "test")}
    for path in lists.values():
        require_path(path, "Stanford Dogs split list", hint)
    images_dir = require_path(_first_dir(root, ("Images", "images/Images")), "Images/ folder", hint)
    annos_dir = require_path(
        _first_dir(root, ("Annotation", "annotations/Annotation")), "Annotation/ folder", hint
    )

    folder_of_label: dict[int, str] = {}
    splits: dict[str, list[Sample]] = {}
    for split, list_path in lists.items():
        files, annos, labels = _read_list(list_path)
        samples = []
        for file, anno, label in zip(files, annos, labels, strict=True):
            folder = Path(file).parts[0]
            if folder_of_label.setdefault(label, folder) != folder:
                raise DatasetLayoutError(
                    f"{list_path}: label {label} is used for both {folder_of_label[label]} and {folder}"
                )
            anno_path = require_path(annos_dir / anno, f"annotation listed in {list_path.name}", hint)
            box = combine_boxes(read_voc_boxes(anno_path), box_mode)
            samples.append(Sample(images_dir / file, label - 1, box))
        require_path(samples[0].path, f"image listed in {list_path.name}", hint)
        splits[split] = samples

    n = max(folder_of_label)
    missing = sorted(set(range(1, n + 1)) - set(folder_of_label))
    if min(folder_of_label) < 1 or missing:
        raise DatasetLayoutError(
            f"{lists['train']}: labels must be 1..{n} with every class used; missing {missing}"
        )
    classes = [folder_of_label[i].split("-", 1)[-1] for i in range(1, n + 1)]
    return DatasetIndex(classes=classes, train=splits["train"], test=splits["test"], val=None)
