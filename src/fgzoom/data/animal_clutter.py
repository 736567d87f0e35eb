"""Cluttered animals from real silhouettes: the ``mnist_clutter`` generator on a second family of real images.

The animals are the 10000 silhouettes (1000 per class, 28x28, white on black, some with interior texture such
as a zebra's stripes) that the PyPI package ``animal-mnist`` (0.4, MIT licence) ships as two gzipped pickles
of numpy arrays, ``animal_mnist/data/Animal_MNIST/animal_data_version_3.gz`` (``uint8[10000, 28, 28]``) and
``animal_label_version_3.gz`` (``int64[10000]``, labels 0..9 in the order of :data:`CLASS_NAMES`). The files
are located with ``importlib.util.find_spec`` only (the package imports tensorflow; it is never imported)
and read by an unpickler that builds numpy arrays and nothing else (:func:`load_array`).

Before the split, duplicate silhouettes are removed (:func:`find_duplicates`): exact copies, mirrored copies
and near-duplicates (the same silhouette re-rendered, shifted or rescaled), judged on a 16x16 copy of each
image's ink box, in both orientations. Each group of duplicates keeps its first image in file order; a group
whose labels disagree is dropped whole. So no test image's silhouette, nor its mirror image, is in train.

Then everything is the shared generator of :mod:`fgzoom.data.clutter`: per class, the first
``train_per_class`` remaining silhouettes (file order) make the train split and the last ``test_per_class``
the test split; each image shows one animal (longer side a random ``d`` in ``animal_size``) among
``num_clutter`` fragments of OTHER animals of the same split. A fragment is centred on a random pixel of its
animal's outline (not anywhere on its ink, as for digits: the inside of a filled silhouette is a plain white
square), so it shows a leg, an ear, a tail, a neck or a patch of stripes. The animal's ink box goes to
``boxes.csv``, the duplicate pairs to ``duplicates.csv``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fgzoom.data import clutter
from fgzoom.data.clutter import ClutterSpec, Objects, ink_box, resize
from fgzoom.data.index import DatasetLayoutError
from fgzoom.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "data.reader_options.animal_clutter"
SOURCE_SIDE = 28
# label k of the source is CLASS_NAMES[k] (the package's README order, checked by looking at the images);
# sorted as strings they keep that order, so the ImageFolder labels equal the source labels
CLASS_NAMES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
PACKAGE = "animal_mnist"
PACKAGE_DIR = ("data", "Animal_MNIST")
IMAGES_FILE = "animal_data_version_3.gz"
LABELS_FILE = "animal_label_version_3.gz"
SOURCE_FORMAT = (
    f"a folder holding {IMAGES_FILE} (gzipped pickle of a numpy uint8 array [N, 28, 28]) and {LABELS_FILE} "
    "(gzipped pickle of a numpy integer array [N], labels 0..9)"
)
INSTALL_HINT = (
    "pip install --no-deps animal-mnist (--no-deps: its declared dependencies include tensorflow, which is not "
    f"needed), or pass {KEY}.source=/path/to/Animal_MNIST ({SOURCE_FORMAT})"
)
CANONICAL_SIDE = 16  # duplicates are judged on each image's ink box resized to this square


@dataclass(frozen=True)
class AnimalClutterSpec(ClutterSpec):
    """Parameters of the generator (all documented in data/README.md).

    Attributes:
        train_per_class: training animals per class, the first distinct silhouettes of each class in the source
            (validation is held out from these by the datamodule).
        test_per_class: test animals per class, the last distinct silhouettes of each class.
        image_size: side of the square images in pixels.
        animal_size: (min, max) of the animal's longer ink side in pixels.
        num_clutter: fragments of other animals per image.
        clutter_size: side of a fragment in source (28x28) pixels, before it is scaled like the animal.
        clutter_gap: empty pixels kept between every fragment and the animal's box; ``None`` lets fragments
            overlap the animal.
        duplicate_mse: two silhouettes are duplicates when the mean squared difference of their 16x16 ink-box
            copies (gray levels 0..1, either orientation) is at most this.
        seed: base seed; the same seed and source always give byte-identical files.
    """

    # the family (unannotated: class attributes, not options)
    KEY = KEY
    SIZE_KEY = "animal_size"
    SOURCE_SIDE = SOURCE_SIDE
    NUM_CLASSES = len(CLASS_NAMES)
    OBJECTS = "distinct silhouettes"
    SUM_NOTE = "their sum <= 811 for animal-mnist 0.4 once duplicates are removed"

    train_per_class: int = 600
    test_per_class: int = 200
    image_size: int = 64
    animal_size: tuple[int, int] = (20, 28)
    num_clutter: int = 8
    clutter_size: int = 12
    clutter_gap: int | None = 2
    duplicate_mse: float = 0.008
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.duplicate_mse
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{KEY}.duplicate_mse={value!r}: must be a number in [0, 1] (0: exact copies only)")


# ---------------------------------------------------------------------------------------------- source
def locate_source(source: str | Path | None = None) -> Path:
    """The folder holding the two pickles: ``source`` (the folder, or either file in it) when given, else the
    one shipped in the ``animal-mnist`` package (found without importing it). Raises
    :class:`DatasetLayoutError` saying what to install or pass."""
    if source is not None:
        path = Path(str(source)).expanduser()
        folder = path.parent if path.is_file() else path
        if not folder.is_dir():
            raise DatasetLayoutError(f"{KEY}.source={source}: not found; pass {SOURCE_FORMAT}")
        missing = [name for name in (IMAGES_FILE, LABELS_FILE) if not (folder / name).is_file()]
        if missing:
            raise DatasetLayoutError(f"{KEY}.source={source}: {folder} has no {' or '.join(missing)}; pass {SOURCE_FORMAT}")
        return folder
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetLayoutError(f"data=animal_clutter needs the animal silhouettes shipped by animal-mnist: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        folder = Path(location).joinpath(*PACKAGE_DIR)
        if (folder / IMAGES_FILE).is_file() and (folder / LABELS_FILE).is_file():
            return folder
    raise DatasetLayoutError(
        f"animal-mnist is installed but {'/'.join(PACKAGE_DIR)}/{IMAGES_FILE} or {LABELS_FILE} is missing under "
        f"{list(spec.submodule_search_locations)}; reinstall it (pip install --no-deps --force-reinstall animal-mnist) "
        f"or pass {KEY}.source=/path/to/Animal_MNIST"
    )


def source_digest(folder: Path) -> str:
    """SHA-256 of the images file and of the labels file, space-separated (recorded in ``spec.json``)."""
    return " ".join(hashlib.sha256((Path(folder) / name).read_bytes()).hexdigest() for name in (IMAGES_FILE, LABELS_FILE))


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a pickled numpy array refers to, under numpy 1's and numpy 2's module names: the array
    and dtype classes, ``_reconstruct`` (pickle protocols 3 and 4), ``_frombuffer`` (protocol 5) and ``scalar``.
    (Protocols 0-2 also need ``_codecs.encode`` for the bytes; such files are refused.)"""
    core = getattr(np, "_core", None) or np.core  # numpy >= 2 names it numpy._core
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles a numpy array and nothing else: every other global is refused before it is looked up."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self.path = path
        self.allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> object:
        found = self.allowed.get((module, name))
        if found is None:
            raise DatasetLayoutError(
                f"{self.path}: refused to unpickle {module}.{name}: only a numpy array may be loaded (numpy.ndarray, "
                "numpy.dtype, numpy's _reconstruct, _frombuffer and scalar); is this the animal-mnist file?"
            )
        return found

    def persistent_load(self, pid: object) -> object:
        raise DatasetLayoutError(f"{self.path}: refused to unpickle a persistent id: only a numpy array may be loaded")


def load_array(path: Path) -> np.ndarray:
    """Read a gzipped pickle of one numpy array without running any other code (:class:`_ArrayUnpickler`).

    Raises :class:`DatasetLayoutError` in one line naming ``path`` when the file is not that, or refers to
    anything besides numpy's array machinery (``os.system``, ``builtins.eval``, ...).
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            value = _ArrayUnpickler(f, path).load()
    except DatasetLayoutError:
        raise
    except Exception as e:  # a corrupt or foreign file fails in many ways (gzip, pickle opcodes, numpy state)
        raise DatasetLayoutError(
            f"{path}: not a gzipped pickle of a numpy array ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(value, np.ndarray) or value.dtype == object:
        raise DatasetLayoutError(f"{path}: holds a {type(value).__name__}, not a numpy array of numbers")
    return value


def load_source(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the two pickles of ``folder``.

    Returns:
        images ``uint8[N, 28, 28]`` and labels ``int64[N]`` in ``0..9``, in file order.
    """
    folder = Path(folder)
    images, labels = load_array(folder / IMAGES_FILE), load_array(folder / LABELS_FILE)
    if images.dtype != np.uint8 or images.shape[1:] != (SOURCE_SIDE, SOURCE_SIDE) or len(images) == 0:
        raise DatasetLayoutError(
            f"{folder / IMAGES_FILE}: expected a uint8 array [N, {SOURCE_SIDE}, {SOURCE_SIDE}], got {images.dtype} "
            f"{list(images.shape)}"
        )
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise DatasetLayoutError(
            f"{folder / LABELS_FILE}: expected an integer array [{len(images)}] (one label per image), got "
            f"{labels.dtype} {list(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
        raise DatasetLayoutError(f"{folder / LABELS_FILE}: labels must be 0..{len(CLASS_NAMES) - 1}, got {labels.min()}..{labels.max()}")
    return np.ascontiguousarray(images), labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------- duplicates
def canonical(images: np.ndarray) -> np.ndarray:
    """Each image's ink box resized (bilinear) to 16x16: ``float64[N, 256]`` of integer gray levels 0..255.

    Shifted and rescaled copies of a silhouette become (nearly) equal; integer values keep every distance
    computed from them exact, whatever the order of the sums.
    """
    s = CANONICAL_SIDE
    out = np.empty((len(images), s * s), dtype=np.float64)
    for k, image in enumerate(images):
        y0, x0, y1, x1 = ink_box(image)
        out[k] = resize(np.ascontiguousarray(image[y0:y1, x0:x1]), s, s).ravel()
    return out


@dataclass(frozen=True)
class Duplicates:
    """Duplicate silhouettes of a source and which rows stay.

    Attributes:
        pairs: ``int64[P, 2]`` source rows ``(a, b)``, ``a < b``, that are duplicates.
        kinds: for each pair, ``exact`` (same bytes), ``mirror`` (one is the other flipped left-right),
            ``near`` or ``near_mirror`` (within ``duplicate_mse``, as they are or with one flipped).
        mse: ``float64[P]``, the pair's mean squared difference (16x16 ink-box copies, gray levels 0..1,
            the closer orientation).
        usable: ``bool[N]``: the first row of each group of duplicates and every row without a duplicate;
            a group whose labels disagree is dropped whole.
        conflicts: rows dropped because their group's labels disagree.
    """

    pairs: np.ndarray
    kinds: list[str]
    mse: np.ndarray
    usable: np.ndarray
    conflicts: int

    def counts(self) -> dict[str, int]:
        """Pairs of each kind, and the rows dropped."""
        counts = {kind: self.kinds.count(kind) for kind in ("exact", "mirror", "near", "near_mirror")}
        return {**counts, "dropped": int((~self.usable).sum()), "conflicts": self.conflicts}

    def to_csv(self, labels: np.ndarray) -> str:
        """``a,b,label_a,label_b,kind,mse``: one line per pair (source rows in file order)."""
        lines = ["a,b,label_a,label_b,kind,mse"]
        for (a, b), kind, mse in zip(self.pairs.tolist(), self.kinds, self.mse.tolist(), strict=True):
            lines.append(f"{a},{b},{labels[a]},{labels[b]},{kind},{mse:.6f}")
        return "\n".join(lines) + "\n"


def find_duplicates(images: np.ndarray, labels: np.ndarray, max_mse: float, chunk: int = 512) -> Duplicates:
    """Exact, mirrored and near-duplicate silhouettes, and the rows that stay (see :class:`Duplicates`).

    Two images are duplicates when the mean squared difference of their :func:`canonical` copies (gray levels
    scaled to 0..1), as they are or with one flipped left-right, is at most ``max_mse``. Duplicates are
    grouped transitively (connected components), so no two rows that stay are duplicates of each other.

    Args:
        images: ``uint8[N, S, S]``.
        labels: ``int64[N]``.
        max_mse: the threshold (0 finds exact copies, in either orientation, only).
    """
    n = len(images)
    same = canonical(images)  # [N, 256]
    mirror = same.reshape(n, CANONICAL_SIDE, CANONICAL_SIDE)[:, :, ::-1].reshape(n, -1)  # [N, 256]
    scale = 255.0**2 * same.shape[1]  # summed squared gray levels per unit of mean squared difference
    limit = max_mse * scale
    norms = (same**2).sum(axis=1)  # [N]; equal for the mirror copies
    found: dict[tuple[int, int], tuple[int, float]] = {}  # (a, b) -> (orientation: 0 same / 1 mirror, ssd)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))  # [c]
        for orientation, other in enumerate((same, mirror)):
            ssd = norms[rows, None] + norms[None, :] - 2.0 * (same[rows] @ other.T)  # [c, N], exact integers
            i, j = np.nonzero((ssd <= limit) & (rows[:, None] < np.arange(n)[None, :]))
            for a, b, d in zip(rows[i].tolist(), j.tolist(), ssd[i, j].tolist(), strict=True):
                if (a, b) not in found or d < found[(a, b)][1]:
                    found[(a, b)] = (orientation, d)
    pairs = np.array(sorted(found), dtype=np.int64).reshape(-1, 2)  # [P, 2]
    kinds, mse = [], np.zeros(len(pairs))
    for k, (a, b) in enumerate(pairs.tolist()):
        orientation, d = found[(a, b)]
        if np.array_equal(images[a], images[b]):
            kinds.append("exact")
        elif np.array_equal(images[a], images[b][:, ::-1]):
            kinds.append("mirror")
        else:
            kinds.append("near_mirror" if orientation else "near")
        mse[k] = max(d, 0.0) / scale

    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, group = connected_components(graph, directed=False)  # [N]
    first = np.full(group.max() + 1, n)
    np.minimum.at(first, group, np.arange(n))
    low, high = np.full(len(first), len(CLASS_NAMES)), np.full(len(first), -1)
    np.minimum.at(low, group, labels)
    np.maximum.at(high, group, labels)
    conflict = (low != high)[group]  # [N]
    usable = (first[group] == np.arange(n)) & ~conflict
    return Duplicates(pairs, kinds, mse, usable, int(conflict.sum()))


def outlines(images: np.ndarray) -> np.ndarray:
    """``bool[N, S, S]``: ink pixels with a 4-neighbour outside the ink (or on the image border)."""
    ink = images > 0
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    inside = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return ink & ~inside


def class_names() -> list[str]:
    """Class folder names, label order: ``bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep, zebra``."""
    return list(CLASS_NAMES)


# ---------------------------------------------------------------------------------------------- files
def load_objects(folder: Path, spec: AnimalClutterSpec) -> Objects:
    """The source as the shared generator takes it: duplicates unusable, fragments anchored on outlines."""
    images, labels = load_source(folder)
    duplicates = find_duplicates(images, labels, spec.duplicate_mse)
    counts = duplicates.counts()
    log.info(
        "animal_clutter: %d images; duplicate pairs: %d exact, %d mirrored, %d near, %d near mirrored; %d images "
        "dropped (%d in groups with conflicting labels), %d distinct silhouettes kept",
        len(images), counts["exact"], counts["mirror"], counts["near"], counts["near_mirror"], counts["dropped"],
        counts["conflicts"], int(duplicates.usable.sum()),
    )
    return Objects(images, labels, duplicates.usable, outlines(images), {"duplicates.csv": duplicates.to_csv(labels)})


def generate(root: str | Path, spec: AnimalClutterSpec, source: str | Path | None = None) -> Path:
    """Write the dataset to ``root`` (ImageFolder layout + ``boxes.csv`` + ``duplicates.csv`` + ``spec.json``)
    unless one with the same spec and source digest is there (:func:`fgzoom.data.clutter.generate`)."""
    folder = locate_source(source)
    return clutter.generate(root, spec, source_digest(folder), lambda: load_objects(folder, spec), class_names())
