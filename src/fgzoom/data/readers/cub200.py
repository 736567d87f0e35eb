"""CUB-200-2011 (Caltech-UCSD Birds) in the layout of ``CUB_200_2011.tgz``.

``data.root`` is the ``CUB_200_2011`` folder or its parent::

    CUB_200_2011/
      images.txt              <image_id> <relative path under images/>
      image_class_labels.txt  <image_id> <class_id>            (1-based)
      train_test_split.txt    <image_id> <is_training_image>   (1 train, 0 test)
      bounding_boxes.txt      <image_id> <x> <y> <width> <height>
      classes.txt             <class_id> <class_name>
      images/<class_name>/<file>.jpg

Boxes: ``x, y`` is the top-left corner in 0-based pixel coordinates and ``width, height`` the
extent, so the box is ``(y, x, y + height, x + width)`` (end-exclusive). There is no official
validation split; the datamodule holds one out of ``train``.

:func:`read_cub_format` also reads NABirds, which uses the same file formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fgzoom.data.index import Box, DatasetIndex, DatasetLayoutError, Sample, require_path
from fgzoom.data.readers.common import find_base, no_download_hint, read_table, xywh_to_box

FOLDER = "CUB_200_2011"
HINT = (
    "Download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ "
    "(CaltechDATA), extract it and pass data.root=/path/to/CUB_200_2011"
)
CUB_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "classes.txt",
    "bounding_boxes.txt",
)


@dataclass(frozen=True)
class CubRecord:
    """One line of a CUB-format dataset: image id, path, raw class id, split and box."""

    image_id: str
    path: Path
    class_id: str
    is_train: bool
    box: Box | None


def read_cub_format(
    base: Path, dataset: str, hint: str, extra_files: tuple[str, ...] = ()
) -> tuple[list[CubRecord], dict[str, str]]:
    """Parse the CUB file set under ``base`` into records and ``{class_id: class_name}``.

    ``dataset`` names the dataset in error messages; ``extra_files`` must exist next to the others.

    Raises :class:`DatasetLayoutError` naming the first missing file or the first image id that a
    file does not cover.
    """
    for name in (*CUB_FILES, *extra_files):
        require_path(base / name, f"{dataset} {name}", hint)
    images_dir = require_path(base / "images", f"{dataset} images/ folder", hint)
    images = read_table(base / "images.txt", 1)
    labels = read_table(base / "image_class_labels.txt", 1)
    split = read_table(base / "train_test_split.txt", 1)
    boxes = read_table(base / "bounding_boxes.txt", 4)
    classes = {k: v[0].strip() for k, v in read_table(base / "classes.txt", 1, maxsplit=1).items()}
    if not images:
        raise DatasetLayoutError(f"{base / 'images.txt'} lists no images. {hint}")
    records = []
    for image_id, (rel, *_) in images.items():
        for table, name in ((labels, "image_class_labels.txt"), (split, "train_test_split.txt")):
            if image_id not in table:
                raise DatasetLayoutError(
                    f"{base / name}: no line for image id {image_id} of images.txt; "
                    "the annotation files are from different releases"
                )
        class_id = labels[image_id][0]
        if class_id not in classes:
            raise DatasetLayoutError(
                f"{base / 'classes.txt'}: no class {class_id} (used by image {image_id})"
            )
        box = None
        if image_id in boxes:
            x, y, w, h = (float(v) for v in boxes[image_id][:4])
            box = xywh_to_box(x, y, w, h)
        records.append(CubRecord(image_id, images_dir / rel, class_id, split[image_id][0] == "1", box))
    for is_train in (True, False):
        first = next((r for r in records if r.is_train == is_train), None)
        if first is None:
            raise DatasetLayoutError(
                f"{base / 'train_test_split.txt'}: no {'training' if is_train else 'test'} images. {hint}"
            )
        require_path(first.path, "image listed in images.txt", hint)
    return records, classes


def read_cub200(root: str | Path, download: bool = False) -> DatasetIndex:
    """Index CUB-200-2011 at ``root`` (the ``CUB_200_2011`` folder or its parent).

    ``download`` exists only to say that CUB cannot be downloaded automatically.
    """
    root = Path(root).expanduser()
    hint = no_download_hint(HINT, download, "CUB-200-2011")
    base = find_base(root, FOLDER, "images.txt")
    records, class_names = read_cub_format(base, "CUB-200-2011", hint)
    class_ids = sorted(class_names, key=int)
    class_to_idx = {c: i for i, c in enumerate(class_ids)}
    samples = {True: [], False: []}
    for r in records:
        samples[r.is_train].append(Sample(r.path, class_to_idx[r.class_id], r.box))
    return DatasetIndex(
        classes=[class_names[c] for c in class_ids],
        train=samples[True],
        test=samples[False],
        val=None,
    )
