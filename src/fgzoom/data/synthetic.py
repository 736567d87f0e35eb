"""The embedded fine-grained dataset: a seeded generator written once in ImageFolder layout.

Every image shows the same kind of object: a large ellipse "body" of random tint, size, position
and orientation on a cluttered background. The class is decided only by a small "mark" (a disc of
``part_size`` pixels, at most 10% of the image area) drawn somewhere on the body, whose inner pattern
is one of :data:`PATTERNS`. Marks of every class share colours and outline; only the fine pattern
inside differs (stripes, checker, ring, cross, ...), drawn with 1-2 pixel strokes. Clutter adds
decoy discs of the same outline filled with noise, and random blobs and lines, so the mark is not
the only salient thing. All patterns are symmetric under a horizontal flip, so flip augmentation
keeps labels valid. ``class_set=shape_stripes`` swaps the patterns for four shapes drawn with fine
horizontal or vertical stripes, for detail finer than a downsampled input can show.

Resolving a 1-2 pixel pattern inside a disc of ~12 pixels after a stride-32 backbone is hard; a model
that finds the mark and looks at it zoomed has a real advantage. The ground-truth box of the mark is
written to ``boxes.csv`` (``path,y0,x0,y1,x1``), so localization can be measured.

Generation is deterministic: image ``i`` of a split is drawn from ``numpy.random.default_rng``
seeded with ``(seed, split, i)`` only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fgzoom.data.generated import SPEC_FILE, write_imagefolder

PATTERNS = ("hstripes", "vstripes", "checker", "ring", "plus", "cross", "dot", "grid")
# class_set=shape_stripes: a coarse shape drawn with fine horizontal (h) or vertical (v) stripes
SHAPE_STRIPES = tuple(f"{shape}_{d}" for shape in ("ring", "plus", "cross", "dot") for d in ("h", "v"))
CLASS_SETS = {"patterns": PATTERNS, "shape_stripes": SHAPE_STRIPES}
DECOY_KINDS = ("noise", "patterns")


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the generator (all documented in data/README.md).

    Attributes:
        num_classes: number of classes (mark patterns) used, the first ones of ``class_set``, 2..8.
        train_per_class: training images per class (validation is held out from these).
        test_per_class: test images per class.
        image_size: side of the square images in pixels.
        part_size: (min, max) diameter of the mark in pixels; its area must stay <= 10% of the image.
        num_decoys: decoy discs (same outline as the mark) per image.
        decoys: ``noise``: decoys are filled with noise and may sit anywhere; ``patterns``: decoys carry
            a random class pattern (drawn independently of the label) and sit off the body, so only
            the mark ON the body tells the class, and a model must find the object to read the right disc.
        num_clutter: random blobs and lines per image.
        class_set: ``patterns`` (:data:`PATTERNS`: eight patterns, each visible at the image's
            resolution) or ``shape_stripes`` (:data:`SHAPE_STRIPES`: four shapes x horizontal/vertical
            stripes: with a fine ``pattern_period`` the shape survives downsampling and the stripe
            direction does not; see data/README.md, "Detail below the input resolution").
        pattern_period: period of the stripes, checker and grid, in mark radii (0.5: ~3 pixels on an
            11-pixel mark).
        seed: base seed; the same seed always gives byte-identical images.
    """

    num_classes: int = 8
    train_per_class: int = 100
    test_per_class: int = 40
    image_size: int = 96
    part_size: tuple[int, int] = (11, 15)
    num_decoys: int = 2
    decoys: str = "noise"
    num_clutter: int = 10
    class_set: str = "patterns"
    pattern_period: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.class_set not in CLASS_SETS:
            raise ValueError(f"data.synthetic.class_set={self.class_set!r}: must be one of {tuple(CLASS_SETS)}")
        if not 2 <= self.num_classes <= len(CLASS_SETS[self.class_set]):
            raise ValueError(f"data.synthetic.num_classes={self.num_classes}: must be in "
                             f"[2, {len(CLASS_SETS[self.class_set])}] for class_set={self.class_set}")
        lo, hi = self.part_size
        if not 4 <= lo <= hi:
            raise ValueError(f"data.synthetic.part_size={self.part_size}: need 4 <= min <= max")
        if hi * hi > 0.10 * self.image_size**2:
            raise ValueError(
                f"data.synthetic.part_size={self.part_size}: a {hi}px mark covers more than 10% of a "
                f"{self.image_size}px image; lower part_size or raise image_size"
            )
        if self.decoys not in DECOY_KINDS:
            raise ValueError(f"data.synthetic.decoys={self.decoys!r}: must be one of {DECOY_KINDS}")
        if not 0.05 <= self.pattern_period <= 1.0:
            raise ValueError(f"data.synthetic.pattern_period={self.pattern_period}: must be in [0.05, 1] (mark radii)")
        if self.train_per_class < 2 or self.test_per_class < 1:
            raise ValueError("data.synthetic: need train_per_class >= 2 and test_per_class >= 1")


SUPERSAMPLE = 4


def _pattern_mask(pattern: str, n: int, period: float = 0.5) -> np.ndarray:
    """A binary ``n x n`` mask (True = dark ink) of ``pattern`` inside a unit disc, n = supersampled size;
    ``period`` (in disc radii) sets the spacing of stripes, checker and grid. ``<shape>_<h|v>`` (see
    :data:`SHAPE_STRIPES`) is a thick ``shape`` whose ink is fine horizontal or vertical stripes."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    c = (n - 1) / 2.0
    u, v = (xx - c) / (n / 2.0), (yy - c) / (n / 2.0)  # in [-1, 1]
    r = np.hypot(u, v)
    stroke = 0.16
    if pattern in SHAPE_STRIPES:
        shape, direction = pattern.split("_")
        thick = 0.26
        shapes = {
            "ring": np.abs(r - 0.5) < thick,
            "plus": (np.abs(u) < thick) | (np.abs(v) < thick),
            "cross": (np.abs(u - v) < thick * 1.4) | (np.abs(u + v) < thick * 1.4),
            "dot": r < 0.6,
        }
        stripes = _pattern_mask("hstripes" if direction == "h" else "vstripes", n, period)
        return shapes[shape] & stripes
    if pattern == "hstripes":
        ink = (np.mod(v + 1.0, period) < period / 2)
    elif pattern == "vstripes":
        ink = (np.mod(u + 1.0, period) < period / 2)
    elif pattern == "checker":
        ink = (np.floor((u + 1.0) / period) + np.floor((v + 1.0) / period)) % 2 == 0
    elif pattern == "ring":
        ink = np.abs(r - 0.5) < stroke
    elif pattern == "plus":
        ink = (np.abs(u) < stroke) | (np.abs(v) < stroke)
    elif pattern == "cross":
        ink = (np.abs(u - v) < stroke * 1.4) | (np.abs(u + v) < stroke * 1.4)
    elif pattern == "dot":
        ink = r < 0.38
    elif pattern == "grid":
        line = min(stroke, 0.32 * period)  # 0.16 at the default period
        ink = (np.mod(u + 1.0, period) < line) | (np.mod(v + 1.0, period) < line)
    else:  # pragma: no cover - CLASS_SETS is closed
        raise ValueError(pattern)
    return ink & (r < 0.82)


def _downsample(a: np.ndarray) -> np.ndarray:
    """Box-filter a supersampled ``(n*S, n*S[, C])`` array to ``(n, n[, C])`` (anti-aliasing)."""
    n = a.shape[0] // SUPERSAMPLE
    return a.reshape(n, SUPERSAMPLE, n, SUPERSAMPLE, *a.shape[2:]).mean(axis=(1, 3))


def _paste_disc(img: np.ndarray, top: int, left: int, fill: np.ndarray, alpha: np.ndarray) -> None:
    """Alpha-blend a ``(d, d, 3)`` ``fill`` with ``(d, d)`` ``alpha`` into ``img`` at (top, left)."""
    d = fill.shape[0]
    region = img[top : top + d, left : left + d]
    region[:] = region * (1 - alpha[..., None]) + fill * alpha[..., None]


def _mark(rng: np.random.Generator, size: int, pattern: str | None, period: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A mark of diameter ``size``: (rgb ``(size, size, 3)``, alpha ``(size, size)``).

    ``pattern=None`` draws a decoy: same outline and colours, random noise inside.
    """
    n = size * SUPERSAMPLE
    yy, xx = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2.0
    r = np.hypot(xx - c, yy - c) / (n / 2.0)
    disc = r <= 1.0
    rim = (r > 0.82) & disc
    paper = np.array([0.93, 0.92, 0.85]) + rng.normal(0, 0.02, 3)
    ink_colour = np.array([0.10, 0.10, 0.14]) + rng.normal(0, 0.02, 3)
    if pattern is None:
        coarse = rng.random((size // 2 + 1, size // 2 + 1)) < 0.45
        ink = np.kron(coarse, np.ones((2 * SUPERSAMPLE, 2 * SUPERSAMPLE), dtype=bool))[:n, :n] & (r < 0.82)
    else:
        ink = _pattern_mask(pattern, n, period)
    rgb = np.where((ink | rim)[..., None], ink_colour, paper)
    return np.clip(_downsample(rgb), 0, 1), _downsample(disc.astype(np.float64))


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s] / s
    a, b = rng.normal(0, 0.5, 2)
    base = rng.uniform(0.25, 0.75, 3)
    img = base + 0.25 * (a * yy + b * xx)[..., None] * rng.uniform(-1, 1, 3)
    return img + rng.normal(0, 0.04, (s, s, 3))


def _draw_clutter(rng: np.random.Generator, img: np.ndarray, count: int) -> None:
    s = img.shape[0]
    yy, xx = np.mgrid[0:s, 0:s]
    for _ in range(count):
        colour = rng.uniform(0, 1, 3)
        if rng.random() < 0.5:  # blob
            cy, cx = rng.uniform(0, s, 2)
            ry, rx = rng.uniform(2, s / 10, 2)
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:  # line
            y0, x0, y1, x1 = rng.uniform(0, s, 4)
            t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / ((y1 - y0) ** 2 + (x1 - x0) ** 2 + 1e-9), 0, 1)
            m = np.hypot(yy - (y0 + t * (y1 - y0)), xx - (x0 + t * (x1 - x0))) <= rng.uniform(0.5, 1.5)
        img[m] = img[m] * 0.3 + colour * 0.7


def render(spec: SyntheticSpec, split: str, index: int, label: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Draw image ``index`` of ``split`` with class ``label``.

    Returns:
        the RGB image (``image_size`` square) and the mark's box ``(y0, x0, y1, x1)``, end-exclusive.
    """
    split_code = {"train": 1, "test": 2}[split]
    rng = np.random.default_rng([spec.seed, split_code, index])
    s = spec.image_size
    img = _background(rng, s)
    _draw_clutter(rng, img, spec.num_clutter // 2)

    # the body: a large tinted ellipse shared by all classes
    yy, xx = np.mgrid[0:s, 0:s]
    cy, cx = rng.uniform(0.35 * s, 0.65 * s, 2)
    ry, rx = rng.uniform(0.22 * s, 0.34 * s), rng.uniform(0.28 * s, 0.42 * s)
    theta = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
    body = u**2 + v**2 <= 1
    tint = np.array([0.55, 0.38, 0.22]) + rng.normal(0, 0.08, 3)
    img[body] = tint + rng.normal(0, 0.03, (int(body.sum()), 3))

    # the mark, somewhere on the body (centre inside the inner part of the ellipse)
    d = int(rng.integers(spec.part_size[0], spec.part_size[1] + 1))
    for _ in range(100):
        a, rr = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.55))
        my = cy + rr * (np.cos(a) * rx * np.sin(theta) + np.sin(a) * ry * np.cos(theta))
        mx = cx + rr * (np.cos(a) * rx * np.cos(theta) - np.sin(a) * ry * np.sin(theta))
        top, left = int(round(my - d / 2)), int(round(mx - d / 2))
        if 0 <= top and 0 <= left and top + d <= s and left + d <= s:
            break
    else:  # pragma: no cover - the body is always large enough
        top, left = (s - d) // 2, (s - d) // 2
    taken = [(top, left)]
    patterns = CLASS_SETS[spec.class_set]

    # decoys: the same disc outline, away from the mark; noise inside, or (decoys=patterns) a random
    # class pattern on the background only
    for _ in range(spec.num_decoys):
        dd = int(rng.integers(spec.part_size[0], spec.part_size[1] + 1))
        pattern = patterns[int(rng.integers(spec.num_classes))] if spec.decoys == "patterns" else None
        for _ in range(50):
            t, lft = (int(v_) for v_ in rng.integers(0, s - dd, 2))
            if pattern is not None and body[t : t + dd, lft : lft + dd].any():
                continue
            if all(abs(t - a_) > spec.part_size[1] or abs(lft - b_) > spec.part_size[1] for a_, b_ in taken):
                rgb, alpha = _mark(rng, dd, pattern, spec.pattern_period)
                _paste_disc(img, t, lft, rgb, alpha)
                taken.append((t, lft))
                break
    rgb, alpha = _mark(rng, d, patterns[label], spec.pattern_period)
    _paste_disc(img, top, left, rgb, alpha)
    _draw_clutter(rng, img, spec.num_clutter - spec.num_clutter // 2)
    # clutter may cross the mark; redraw the mark on top so the pattern stays readable
    _paste_disc(img, top, left, rgb, alpha)
    arr = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB"), (top, left, top + d, left + d)


def class_names(spec: SyntheticSpec) -> list[str]:
    patterns = CLASS_SETS[spec.class_set]
    return [f"{i:02d}_{patterns[i]}" for i in range(spec.num_classes)]


def generate(root: str | Path, spec: SyntheticSpec) -> Path:
    """Write the dataset to ``root`` (ImageFolder layout + ``boxes.csv`` + ``spec.json``) unless an
    identical one is already there. Writing goes to a temporary folder renamed at the end, so an
    interrupted run never leaves a half-written dataset.
    """
    root = Path(root)
    if is_current(root, spec):
        return root
    per_class = {"train": spec.train_per_class, "test": spec.test_per_class}
    return write_imagefolder(
        root, class_names(spec), per_class, lambda split, label, index: render(spec, split, index, label), asdict(spec)
    )


def is_current(root: Path, spec: SyntheticSpec) -> bool:
    """True when ``root`` holds a complete dataset generated with exactly ``spec``."""
    spec_file = Path(root) / SPEC_FILE
    if not spec_file.exists():
        return False
    # fields added later default to the behaviour of files written before them
    saved = {**asdict(SyntheticSpec()), **json.loads(spec_file.read_text())}
    saved["part_size"] = tuple(saved.get("part_size", ()))
    return saved == asdict(spec)
