"""Stanford Cars (196 classes) in the layouts it circulates in since its original URL went dead.

``data.root`` is the ``stanford_cars`` folder or its parent. Accepted layouts, tried in this order:

1. ``car_ims/`` + ``cars_annos.mat`` (the publisher's all-in-one release: one annotation file with
   ``relative_im_path``, the boxes, ``class``, ``test`` and ``class_names``).
2. torchvision's :class:`~torchvision.datasets.StanfordCars` layout and the Kaggle re-uploads::

       stanford_cars/
         devkit/cars_meta.mat                 (or car_devkit/devkit/, as in the Kaggle upload)
         devkit/cars_train_annos.mat          (or cars_train_annos.mat next to cars_train/)
         cars_test_annos_withlabels.mat       (or in the devkit folder, or Kaggle's
                                               "cars_test_annos_withlabels (1).mat")
         cars_train/*.jpg                     (or Kaggle's nested cars_train/cars_train/*.jpg)
         cars_test/*.jpg                      (or cars_test/cars_test/*.jpg)

   ``devkit/cars_test_annos.mat`` has no class labels and cannot replace the ``_withlabels`` file.

We parse the ``.mat`` files ourselves (as torchvision does: ``class - 1``, ``fname`` under the image
folder, ``class_names`` of ``cars_meta.mat``) because torchvision reads only its own layout and drops
the boxes. Boxes ``bbox_x1, bbox_y1, bbox_x2, bbox_y2`` are MATLAB pixel indices (1-based,
inclusive): ``(y1 - 1, x1 - 1, y2, x2)``. There is no official validation split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fgzoom.data.index import Box, DatasetIndex, DatasetLayoutError, Sample, require_path

FOLDER = "stanford_cars"
HINT = (
    "Get cars_train/, cars_test/, the devkit and cars_test_annos_withlabels.mat (the original site is gone; "
    "see https://github.com/pytorch/vision/issues/7545 for the Kaggle copies) and pass "
    "data.root=/path/to/stanford_cars; accepted layouts are listed in data/README.md"
)
NO_DOWNLOAD = (
    "data.download=true cannot fetch Stanford Cars: its original URL is dead and torchvision's StanfordCars "
    "has no download; set data.download=false. "
)
TEST_ANNOS = ("cars_test_annos_withlabels.mat", "cars_test_annos_withlabels (1).mat")


def _annotations(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    try:
        return np.atleast_1d(loadmat(path, squeeze_me=True)["annotations"])
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise DatasetLayoutError(
            f"{path}: not a Stanford Cars annotation file with an 'annotations' struct ({type(e).__name__}: {e})"
        ) from e


def _class_names(path: Path) -> list[str]:
    from scipy.io import loadmat

    try:
        return [str(c) for c in np.atleast_1d(loadmat(path, squeeze_me=True)["class_names"])]
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise DatasetLayoutError(
            f"{path}: expected a 'class_names' cell array ({type(e).__name__}: {e})"
        ) from e


def _field(a: np.void, name: str, path: Path):
    try:
        return a[name]
    except (KeyError, ValueError, IndexError) as e:
        raise DatasetLayoutError(
            f"{path}: annotations lack the field {name!r}; "
            "for the test split use cars_test_annos_withlabels.mat, not devkit/cars_test_annos.mat"
        ) from e


def _box(a: np.void, path: Path) -> Box:
    x1, y1, x2, y2 = (float(_field(a, k, path)) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
    return (max(0.0, y1 - 1), max(0.0, x1 - 1), y2, x2)


def _label(a: np.void, path: Path, num_classes: int) -> int:
    label = int(_field(a, "class", path)) - 1
    if not 0 <= label < num_classes:
        raise DatasetLayoutError(f"{path}: class {label + 1} is outside 1..{num_classes} of cars_meta.mat")
    return label


def _first_existing(candidates: list[Path]) -> Path:
    return next((p for p in candidates if p.exists()), candidates[0])


def _image_dir(base: Path, name: str) -> Path:
    nested = base / name / name  # Kaggle: cars_train/cars_train/*.jpg
    return nested if nested.is_dir() else base / name


def _read_car_ims(base: Path, hint: str) -> DatasetIndex:
    path = base / "cars_annos.mat"
    classes = _class_names(path)
    splits: dict[bool, list[Sample]] = {False: [], True: []}
    for a in _annotations(path):
        rel = str(_field(a, "relative_im_path", path))
        is_test = bool(int(_field(a, "test", path)))
        splits[is_test].append(Sample(base / rel, _label(a, path, len(classes)), _box(a, path)))
    for samples in splits.values():
        if not samples:
            raise DatasetLayoutError(f"{path}: the 'test' flags leave one split empty. {hint}")
        require_path(samples[0].path, "image listed in cars_annos.mat", hint)
    return DatasetIndex(classes=classes, train=splits[False], test=splits[True], val=None)


def read_stanford_cars(root: str | Path, download: bool = False) -> DatasetIndex:
    """Index Stanford Cars at ``root``; see the module docstring for the accepted layouts.

    ``download`` exists only to say that Stanford Cars cannot be downloaded (torchvision neither).
    """
    root = Path(root).expanduser()
    hint = (NO_DOWNLOAD if download else "") + HINT
    base = root / FOLDER if (root / FOLDER).is_dir() else root
    require_path(base, "Stanford Cars root (data.root)", hint)
    devkit = _first_existing([base / "devkit", base / "car_devkit" / "devkit"])
    if (base / "car_ims").is_dir() and ((base / "cars_annos.mat").is_file() or not devkit.exists()):
        require_path(base / "cars_annos.mat", "Stanford Cars annotations of car_ims/", hint)
        return _read_car_ims(base, hint)
    meta = require_path(devkit / "cars_meta.mat", "Stanford Cars class names", hint)
    train_annos = _first_existing([devkit / "cars_train_annos.mat", base / "cars_train_annos.mat"])
    require_path(train_annos, "Stanford Cars training annotations", hint)
    test_annos = _first_existing([d / n for n in TEST_ANNOS for d in (base, devkit)])
    require_path(
        test_annos,
        "Stanford Cars test annotations with labels (devkit/cars_test_annos.mat has none; "
        "Kaggle's 'cars_test_annos_withlabels (1).mat' is accepted too)",
        hint,
    )
    image_dirs = {"train": _image_dir(base, "cars_train"), "test": _image_dir(base, "cars_test")}
    for d in image_dirs.values():
        require_path(d, "Stanford Cars image folder", hint)

    classes = _class_names(meta)
    splits: dict[str, list[Sample]] = {}
    for split, annos in (("train", train_annos), ("test", test_annos)):
        samples = [
            Sample(
                image_dirs[split] / str(_field(a, "fname", annos)),
                _label(a, annos, len(classes)),
                _box(a, annos),
            )
            for a in _annotations(annos)
        ]
        if not samples:
            raise DatasetLayoutError(f"{annos}: no annotations. {hint}")
        require_path(samples[0].path, f"image listed in {annos.name}", hint)
        splits[split] = samples
    return DatasetIndex(classes=classes, train=splits["train"], test=splits["test"], val=None)
