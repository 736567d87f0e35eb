"""FGVC-Aircraft 2013b through :class:`torchvision.datasets.FGVCAircraft`, plus its boxes.

``data.root`` is the folder holding ``fgvc-aircraft-2013b/`` (torchvision's root) or that folder
itself::

    fgvc-aircraft-2013b/data/
      images/<7-digit id>.jpg
      variants.txt  families.txt  manufacturers.txt          one class name per line
      images_<level>_{train,val,test}.txt                    <id> <class name>
      images_box.txt                                         <id> <xmin> <ymin> <xmax> <ymax>

``annotation_level`` is ``variant`` (100 classes, the usual benchmark), ``family`` (70) or
``manufacturer`` (30). The official ``train``, ``val`` and ``test`` lists are used as they are
(never ``trainval``, which would put the validation images into training).

Boxes: the dataset's README says the top-left pixel is (1, 1) and the box spans xmin..xmax, so it
becomes ``(ymin - 1, xmin - 1, ymax, xmax)``. Every image carries a ~20-pixel copyright banner
along its bottom edge; it is not cropped (boxes are in full-image pixels either way).

``data.download=true`` lets torchvision fetch and extract the 2.75 GB archive (in
``prepare_data``, once per node) when the layout is missing.
"""

from __future__ import annotations

from pathlib import Path

from fgzoom.data.index import Box, DatasetIndex, DatasetLayoutError, Sample, require_path
from fgzoom.data.readers.common import read_table
from fgzoom.errors import ConfigError

FOLDER = "fgvc-aircraft-2013b"
LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
SPLITS = ("train", "val", "test")
HINT = (
    "Download fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ and pass "
    "data.root=<folder containing fgvc-aircraft-2013b>, or set data.download=true"
)


def _torchvision_root(root: Path) -> Path:
    """The folder that contains ``fgvc-aircraft-2013b`` (what torchvision calls root)."""
    if root.name == FOLDER:
        return root.parent
    if root.name == "data" and root.parent.name == FOLDER:
        return root.parent.parent
    return root


def _key_files(data: Path, level: str) -> list[tuple[Path, str]]:
    files = [(data / "images", "FGVC-Aircraft images folder"), (data / LEVELS[level], f"{level} class list")]
    files += [(data / f"images_{level}_{s}.txt", f"{s} split list") for s in SPLITS]
    return files + [(data / "images_box.txt", "FGVC-Aircraft boxes")]


def _layout_complete(data: Path, level: str) -> bool:
    return all(path.exists() for path, _ in _key_files(data, level))


def _check_level(annotation_level: str) -> None:
    if annotation_level not in LEVELS:
        raise ConfigError(
            f"data.reader_options.annotation_level={annotation_level!r}: must be one of {tuple(LEVELS)}"
        )


def prepare_fgvc_aircraft(
    root: str | Path, annotation_level: str = "variant", download: bool = False
) -> None:
    """Download and extract the dataset with torchvision when ``download`` and the layout is missing."""
    _check_level(annotation_level)
    tv_root = _torchvision_root(Path(root).expanduser())
    if download and not _layout_complete(tv_root / FOLDER / "data", annotation_level):
        from torchvision.datasets import FGVCAircraft

        tv_root.mkdir(parents=True, exist_ok=True)
        try:
            FGVCAircraft(tv_root, split="train", annotation_level=annotation_level, download=True)
        except Exception as e:  # urllib/HTTP/tar errors: say what failed and how to do it by hand
            raise DatasetLayoutError(
                f"data.download=true: fetching FGVC-Aircraft into {tv_root} failed ({type(e).__name__}: {e}). "
                f"{HINT}"
            ) from e


def _read_boxes(path: Path) -> dict[str, Box]:
    boxes = {}
    for image_id, fields in read_table(path, 4).items():
        xmin, ymin, xmax, ymax = (float(v) for v in fields[:4])
        boxes[image_id] = (max(0.0, ymin - 1), max(0.0, xmin - 1), ymax, xmax)
    return boxes


def read_fgvc_aircraft(
    root: str | Path, annotation_level: str = "variant", download: bool = False
) -> DatasetIndex:
    """Index FGVC-Aircraft at ``root`` with the official train/val/test splits.

    Args:
        annotation_level: ``variant``, ``family`` or ``manufacturer``.
        download: fetch the archive with torchvision if the layout is missing.
    """
    from torchvision.datasets import FGVCAircraft

    _check_level(annotation_level)
    tv_root = _torchvision_root(Path(root).expanduser())
    data = tv_root / FOLDER / "data"
    if download:
        prepare_fgvc_aircraft(tv_root, annotation_level, download=True)
    for path, what in _key_files(data, annotation_level):
        require_path(path, what, HINT)
    boxes = _read_boxes(data / "images_box.txt")

    classes: list[str] = []
    splits: dict[str, list[Sample]] = {}
    for split in SPLITS:
        try:
            ds = FGVCAircraft(tv_root, split=split, annotation_level=annotation_level, download=False)
            files, labels = ds._image_files, ds._labels  # torchvision keeps the parsed lists private
        except (KeyError, ValueError) as e:
            raise DatasetLayoutError(
                f"{data / f'images_{annotation_level}_{split}.txt'}: names a class missing from "
                f"{data / LEVELS[annotation_level]} ({e}); the files are from different releases"
            ) from e
        classes = list(ds.classes)
        samples = [
            Sample(Path(f), int(y), boxes.get(Path(f).stem)) for f, y in zip(files, labels, strict=True)
        ]
        if not samples:
            raise DatasetLayoutError(
                f"{data / f'images_{annotation_level}_{split}.txt'} lists no images. {HINT}"
            )
        require_path(samples[0].path, f"image listed in images_{annotation_level}_{split}.txt", HINT)
        splits[split] = samples
    return DatasetIndex(classes=classes, train=splits["train"], val=splits["val"], test=splits["test"])
