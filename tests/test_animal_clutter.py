"""Cluttered animals: the pickles read without running code, duplicates kept out of the split, layout, boxes,
determinism, one-line errors, and a training smoke run.

The tests build a tiny source in animal-mnist's format themselves (two gzipped pickles of numpy arrays), so the
package is not needed.
"""

from __future__ import annotations

import gzip
import importlib.machinery
import importlib.util
import os
import pickle
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgzoom.data import clutter
from fgzoom.data.animal_clutter import (
    CLASS_NAMES,
    IMAGES_FILE,
    LABELS_FILE,
    AnimalClutterSpec,
    find_duplicates,
    load_array,
    load_objects,
    load_source,
    locate_source,
    outlines,
)
from fgzoom.data.index import DatasetLayoutError
from fgzoom.data.readers.animal_clutter import prepare_animal_clutter, read_animal_clutter
from fgzoom.errors import ConfigError
from tests.helpers import compose_config, run_script_here

PER_CLASS = 5  # rows per class in the fake source, grouped by class as in animal-mnist's file
TINY = {"train_per_class": 2, "test_per_class": 1, "image_size": 48, "animal_size": [14, 20], "num_clutter": 6,
        "clutter_size": 10}


def _silhouette(rng: np.random.Generator) -> np.ndarray:
    """A 28x28 ``uint8`` "animal": a filled elliptic body, a head, legs, and stripes on some."""
    yy, xx = np.mgrid[0:28, 0:28].astype(float)
    cy, cx = rng.uniform(10, 14), rng.uniform(11, 17)
    ry, rx = rng.uniform(3.5, 6), rng.uniform(6, 10)
    ink = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    hy, hx = cy - ry + rng.uniform(-2, 1), cx + rng.choice([-1, 1]) * rx * rng.uniform(0.6, 1.0)
    ink |= (yy - hy) ** 2 + (xx - hx) ** 2 <= rng.uniform(2, 4) ** 2
    for leg in rng.uniform(cx - rx * 0.8, cx + rx * 0.8, rng.integers(2, 5)):
        ink |= (np.abs(xx - leg) <= 0.8) & (yy >= cy) & (yy <= cy + ry + rng.uniform(3, 8))
    img = ink * 255.0
    if rng.random() < 0.5:
        img *= 0.6 + 0.4 * (np.sin(xx * rng.uniform(0.8, 1.6)) > 0)
    return img.round().astype(np.uint8)


def _near_copy(image: np.ndarray) -> np.ndarray:
    """The same silhouette re-rendered: shifted and shrunk by a tenth."""
    y0, x0, y1, x1 = clutter.ink_box(image)
    h, w = y1 - y0, x1 - x0
    small = clutter.resize(np.ascontiguousarray(image[y0:y1, x0:x1]), round(h * 0.9), round(w * 0.9))
    out = np.zeros_like(image)
    out[1 : 1 + small.shape[0], 2 : 2 + small.shape[1]] = small
    return out


def fake_source(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per class 4 distinct silhouettes then a copy of the first: exact (classes 0, 3-9), mirrored (class 1),
    re-rendered (class 2). Row 3 of class 9 is a copy of row 3 of class 8: one silhouette with two labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(10):
        rows = [_silhouette(rng) for _ in range(4)]
        copy = {1: rows[0][:, ::-1], 2: _near_copy(rows[0])}.get(label, rows[0])
        images += [*rows, np.ascontiguousarray(copy)]
        labels += [label] * PER_CLASS
    images = np.stack(images)
    images[9 * PER_CLASS + 3] = images[8 * PER_CLASS + 3]
    return images, np.array(labels, dtype=np.int64)


def _write_pickle(path: Path, value: object, protocol: int = 4) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(pickle.dumps(value, protocol=protocol))
    return path


def write_fake_source(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = fake_source(seed)
    _write_pickle(folder / IMAGES_FILE, images)
    _write_pickle(folder / LABELS_FILE, labels)
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_fake_source(tmp_path_factory.mktemp("src") / "Animal_MNIST")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, source) -> Path:
    root = tmp_path_factory.mktemp("data") / "animal_clutter"
    prepare_animal_clutter(root, {**TINY, "source": str(source)})
    return root


# ---------------------------------------------------------------------------------------------- the pickles
@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_numpy_arrays_load_under_every_modern_protocol(tmp_path, protocol):
    images, labels = fake_source()
    assert np.array_equal(load_array(_write_pickle(tmp_path / "a.gz", images, protocol)), images)
    loaded = load_array(_write_pickle(tmp_path / "b.gz", labels, protocol))
    assert loaded.dtype == np.int64 and np.array_equal(loaded, labels)


# Crafted by hand, never produced by pickling a callable: GLOBAL/STACK_GLOBAL names a function, REDUCE would call it.
ATTACKS = {
    "os.system": b"cos\nsystem\n(S'echo fgzoom-test'\ntR.",  # protocol 0: GLOBAL + REDUCE
    "posix.system": b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.",  # STACK_GLOBAL
    "builtins.eval": b"\x80\x02cbuiltins\neval\nq\x00X\x03\x00\x00\x001+1q\x01\x85q\x02Rq\x03.",
    "numpy.load": b"\x80\x04\x8c\x05numpy\x94\x8c\x04load\x94\x93\x94\x8c\x01x\x94\x85\x94R\x94.",  # numpy, not an array
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_a_pickle_that_calls_a_function_is_refused_in_one_line(tmp_path, monkeypatch, name):
    calls = []
    for module in (os, pytest.importorskip("posix")):  # were anything looked up, it would be this harmless recorder
        monkeypatch.setattr(module, "system", lambda *args: calls.append(args) or 0)
    folder = write_fake_source(tmp_path / "Animal_MNIST")
    with gzip.open(folder / IMAGES_FILE, "wb") as f:
        f.write(ATTACKS[name])
    with pytest.raises(DatasetLayoutError, match=f"refused to unpickle {name}") as raised:
        prepare_animal_clutter(tmp_path / "ac", {**TINY, "source": str(folder)})
    assert str(folder / IMAGES_FILE) in str(raised.value) and "\n" not in str(raised.value)
    assert calls == [] and not (tmp_path / "ac").exists()


def test_files_that_are_not_an_array_pickle_are_one_line(tmp_path):
    not_gzip = tmp_path / "plain.gz"
    not_gzip.write_bytes(b"not a gzip file")
    with pytest.raises(DatasetLayoutError, match="not a gzipped pickle of a numpy array"):
        load_array(not_gzip)
    with pytest.raises(DatasetLayoutError, match="holds a list, not a numpy array"):
        load_array(_write_pickle(tmp_path / "list.gz", [1, 2, 3]))
    with pytest.raises(DatasetLayoutError, match="refused to unpickle .*_codecs.encode"):  # protocol 2 needs it
        load_array(_write_pickle(tmp_path / "p2.gz", np.zeros(3, np.uint8), protocol=2))
    folder = write_fake_source(tmp_path / "Animal_MNIST")
    _write_pickle(folder / LABELS_FILE, np.zeros(7, np.int64))
    with pytest.raises(DatasetLayoutError, match=r"one label per image"):
        load_source(folder)
    _write_pickle(folder / IMAGES_FILE, np.zeros((4, 28, 28), np.float32))
    with pytest.raises(DatasetLayoutError, match=r"expected a uint8 array \[N, 28, 28\], got float32"):
        load_source(folder)


# ---------------------------------------------------------------------------------------------- duplicates
def test_duplicates_are_found_and_the_split_keeps_them_apart(source):
    images, labels = load_source(source)
    dups = find_duplicates(images, labels, AnimalClutterSpec().duplicate_mse)
    found = {tuple(pair): kind for pair, kind in zip(dups.pairs.tolist(), dups.kinds, strict=True)}
    first = {label: label * PER_CLASS for label in range(10)}
    expected = {(first[c], first[c] + 4): "exact" for c in (0, 3, 4, 5, 6, 7, 8, 9)}
    expected |= {(first[1], first[1] + 4): "mirror", (first[2], first[2] + 4): "near",
                 (first[8] + 3, first[9] + 3): "exact"}
    assert found == expected
    assert dups.counts() == {"exact": 9, "mirror": 1, "near": 1, "near_mirror": 0, "dropped": 12, "conflicts": 2}
    # each copy (row 4) is dropped, its original kept; the silhouette with two labels is dropped from both classes
    assert not dups.usable[[first[c] + 4 for c in range(10)]].any() and dups.usable[list(first.values())].all()
    assert not dups.usable[[first[8] + 3, first[9] + 3]].any()

    spec = AnimalClutterSpec.from_options(TINY)
    pools = clutter.split_pools(labels, spec, dups.usable)
    # per class: the first two distinct silhouettes train, the last one tests (row 3; row 2 where row 3 was dropped)
    assert pools["train"].tolist() == [first[c] + k for c in range(10) for k in (0, 1)]
    assert pools["test"].tolist() == [first[c] + (2 if c in (8, 9) else 3) for c in range(10)]
    # no test silhouette, nor its mirror image, is a duplicate of a training one
    union = np.concatenate([pools["train"], pools["test"]])
    assert len(find_duplicates(images[union], labels[union], spec.duplicate_mse).pairs) == 0
    # without the near-duplicate rule, class 2's test image would be the re-rendered copy of a training image
    exact_only = find_duplicates(images, labels, 0.0)
    assert exact_only.counts()["near"] == 0 and exact_only.usable[first[2] + 4]
    assert clutter.split_pools(labels, spec, exact_only.usable)["test"][2] == first[2] + 4


def test_fragments_are_centred_on_outlines_of_other_animals_of_the_split(source):
    square = np.zeros((1, 6, 6), np.uint8)
    square[0, 1:5, 1:5] = 200
    ring = np.zeros((6, 6), bool)
    ring[1:5, 1:5], ring[2:4, 2:4] = True, False
    assert np.array_equal(outlines(square)[0], ring)

    objects = load_objects(source, AnimalClutterSpec.from_options(TINY))
    assert np.array_equal(objects.anchors, outlines(objects.images)) and "duplicates.csv" in objects.files
    spec = AnimalClutterSpec.from_options(TINY)
    pools = clutter.split_pools(objects.labels, spec, objects.usable)
    for split, pool in pools.items():
        for i in range(len(pool)):
            _, _, rows = clutter.render(spec, objects.images, pool, split, i, objects.anchors)
            assert set(rows.tolist()) <= set(pool.tolist()) and rows[0] == pool[i] and pool[i] not in rows[1:]


# ---------------------------------------------------------------------------------------------- files
def _gray(path: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(path))
    assert rgb.shape[2] == 3 and (rgb == rgb[..., :1]).all()  # gray replicated to RGB
    return rgb[..., 0]


def test_layout_counts_and_boxes_around_the_animal(dataset):
    index = read_animal_clutter(dataset, TINY)
    assert index.classes == list(CLASS_NAMES) == sorted(CLASS_NAMES)  # folder order is the source's label order
    assert (len(index.train), len(index.test)) == (20, 10)
    gap = AnimalClutterSpec().clutter_gap
    for sample in index.train + index.test:
        img = _gray(sample.path)
        y0, x0, y1, x1 = (int(v) for v in sample.box)
        assert img.shape == (48, 48) and 0 <= y0 < y1 <= 48 and 0 <= x0 < x1 <= 48
        assert TINY["animal_size"][0] - 2 <= max(y1 - y0, x1 - x0) <= TINY["animal_size"][1]
        animal = img[y0:y1, x0:x1]
        assert animal[0].any() and animal[-1].any() and animal[:, 0].any() and animal[:, -1].any()  # tight
        ring = img[max(0, y0 - gap) : y1 + gap, max(0, x0 - gap) : x1 + gap].copy()
        ring[y0 - max(0, y0 - gap) : y1 - max(0, y0 - gap), x0 - max(0, x0 - gap) : x1 - max(0, x0 - gap)] = 0
        assert not ring.any()  # fragments keep clutter_gap pixels away
        outside = img.copy()
        outside[y0:y1, x0:x1] = 0
        assert outside.any()  # and there are fragments
    lines = (dataset / "duplicates.csv").read_text().splitlines()
    assert lines[0] == "a,b,label_a,label_b,kind,mse" and len(lines) == 1 + 11
    assert "43,48,8,9,exact,0.000000" in lines  # the silhouette with two labels


def test_generation_is_deterministic(tmp_path, source, dataset):
    again = tmp_path / "again"
    prepare_animal_clutter(again, {**TINY, "source": str(source)})
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (dataset / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    prepare_animal_clutter(other, {**TINY, "source": str(source), "seed": 1})
    assert (dataset / "train/cow/00006.png").read_bytes() != (other / "train/cow/00006.png").read_bytes()


def test_no_regeneration_while_the_spec_and_source_are_unchanged(tmp_path, source):
    root = tmp_path / "ac"
    options = {**TINY, "source": str(source)}
    prepare_animal_clutter(root, options)
    marker = root / "marker"
    marker.touch()
    prepare_animal_clutter(root, {**options, "source": str(source / IMAGES_FILE)})  # either file names the folder
    assert marker.exists()
    prepare_animal_clutter(root, {**options, "duplicate_mse": 0.0})
    assert not marker.exists()
    with pytest.raises(DatasetLayoutError, match="other parameters"):
        read_animal_clutter(root, TINY)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"train_per_class": 1}, "train_per_class"),
        ({"animal_size": [30, 20]}, "animal_size"),
        ({"clutter_size": 29}, "clutter_size"),
        ({"duplicate_mse": -0.1}, "duplicate_mse"),
        ({"duplicate_mse": "high"}, "duplicate_mse"),
        ({"digit_size": [10, 12]}, "unknown option"),
        ({"train_per_class": 3, "test_per_class": 1}, "train_per_class \\+ test_per_class.*3 distinct silhouettes"),
    ],
)
def test_bad_options_raise_one_line(tmp_path, source, options, key):
    with pytest.raises(ConfigError, match=f"data.reader_options.animal_clutter.*{key}") as raised:
        prepare_animal_clutter(tmp_path / "ac", {**TINY, **options, "source": str(source)})
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "ac").exists()


def test_missing_source_says_what_to_install_or_pass(tmp_path, monkeypatch, source):
    with pytest.raises(DatasetLayoutError, match="animal_clutter.source=.*not found"):
        prepare_animal_clutter(tmp_path / "ac", {"source": str(tmp_path / "nope")})
    half = tmp_path / "half"
    half.mkdir()
    (half / IMAGES_FILE).write_bytes((source / IMAGES_FILE).read_bytes())
    with pytest.raises(DatasetLayoutError, match=f"has no {LABELS_FILE}"):
        prepare_animal_clutter(tmp_path / "ac", {"source": str(half)})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "animal_mnist" else real_find_spec(name, *a))
    with pytest.raises(DatasetLayoutError, match=r"pip install --no-deps animal-mnist.*animal_clutter\.source=") as raised:
        prepare_animal_clutter(tmp_path / "ac", {})
    assert "\n" not in str(raised.value) and not (tmp_path / "ac").exists()


def test_package_files_are_found_without_importing_the_package(tmp_path, monkeypatch, source):
    package = tmp_path / "site" / "animal_mnist"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('importing animal_mnist imports tensorflow')\n")
    folder = write_fake_source(package / "data" / "Animal_MNIST")
    spec = importlib.machinery.ModuleSpec("animal_mnist", None, is_package=True)
    spec.submodule_search_locations.append(str(package))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "animal_mnist" else real_find_spec(name, *a))
    monkeypatch.delitem(sys.modules, "animal_mnist", raising=False)
    assert locate_source() == folder
    prepare_animal_clutter(tmp_path / "ac", TINY)
    assert "animal_mnist" not in sys.modules
    (folder / LABELS_FILE).unlink()
    with pytest.raises(DatasetLayoutError, match="animal-mnist is installed but"):
        locate_source()


# ---------------------------------------------------------------------------------------------- training
def _overrides(tmp_path: Path, source: Path) -> list[str]:
    options = [f"data.reader_options.animal_clutter.{k}={v}".replace(" ", "") for k, v in TINY.items()]
    return ["data=animal_clutter", f"data.root={tmp_path / 'animal_clutter'}", *options,
            f"data.reader_options.animal_clutter.source={source}", "data.image_size=48", "data.batch_size=4",
            "data.num_workers=0"]


def test_datamodule_reads_the_composed_config(tmp_path, source):
    import hydra

    cfg = compose_config("train.yaml", _overrides(tmp_path, source), tmp_path / "run")
    options = dict(cfg.data.reader_options.animal_clutter)
    assert set(options) == {f.name for f in fields(AnimalClutterSpec)} | {"source"}  # every option is in the yaml
    assert cfg.data.hflip == 0.5 and cfg.data.crop_pct == 1.0  # silhouettes face either way; keep the whole frame
    datamodule = hydra.utils.instantiate(cfg.data, mean=[0.5] * 3, std=[0.5] * 3, seed=0)
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.num_classes == 10 and datamodule.class_names == list(CLASS_NAMES)
    assert sum(len(s) for s in datamodule.splits.values()) == 30 and len(datamodule.splits["test"]) == 10
    assert all(s.box is not None for split in datamodule.splits.values() for s in split)
    batch = next(iter(datamodule.train_dataloader()))
    assert tuple(batch["image"].shape) == (4, 3, 48, 48)


def test_prepare_data_script_generates_or_says_what_to_install(tmp_path, monkeypatch, source):
    result = run_script_here("prepare_data.py", *_overrides(tmp_path, source), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "10 classes" in result.stdout and "test       10 images,      10 with boxes" in result.stdout
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "animal_mnist" else real_find_spec(name, *a))
    result = run_script_here("prepare_data.py", "data=animal_clutter", f"data.root={tmp_path / 'elsewhere'}",
                             f"hydra.run.dir={tmp_path / 'run2'}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "pip install --no-deps animal-mnist" in last and "data.reader_options.animal_clutter.source=" in last


@pytest.mark.slow  # a training run, ~10 s on 2 cores (docs/contributing.md)
def test_a_fast_dev_run_trains_on_animal_clutter(tmp_path, source):
    from fgzoom.cli.train import train

    overrides = [*_overrides(tmp_path, source), "model.backbone.name=resnet18", "trainer=cpu", "debug=fast"]
    metrics = train(compose_config("train.yaml", overrides, tmp_path / "run"))
    assert 0.0 <= metrics["test/acc"] <= 1.0 and "test/iou_mean" in metrics  # the boxes reach the zoom metrics
