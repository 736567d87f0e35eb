"""FGVC dataset readers on tiny fixtures in each dataset's official layout, and through the datamodule."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.fgvc_layouts import (
    BUILDERS,
    CAR_CLASSES,
    DOG_FIRST_BOX,
    DOG_LARGEST_BOX,
    KEY_FILES,
    KNOWN_BOX,
    Layout,
    make_cub200,
    make_fgvc_aircraft,
    make_flowers102,
    make_nabirds,
    make_oxford_pets,
    make_stanford_cars,
    make_stanford_dogs,
    truncate,
)
from PIL import Image

from fgzoom.data.datamodule import FGVCDataModule
from fgzoom.data.dataset import BadImageError
from fgzoom.data.index import DatasetLayoutError, Sample
from fgzoom.data.readers import PREPARERS, READERS
from fgzoom.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATASETS = list(BUILDERS)
CARS_VARIANTS = ["torchvision", "kaggle", "car_ims"]


def build(name: str, base: Path) -> Layout:
    return BUILDERS[name](base)


def find(samples: list[Sample], path: Path) -> int:
    matches = [i for i, s in enumerate(samples) if Path(s.path).resolve() == path.resolve()]
    assert len(matches) == 1, f"{path} found {len(matches)} times"
    return matches[0]


# ------------------------------------------------------------------------------------------- readers
@pytest.mark.parametrize("name", DATASETS)
def test_reader_counts_classes_and_box(name: str, tmp_path: Path) -> None:
    layout = build(name, tmp_path)
    index = READERS[name](layout.root)
    assert index.classes == layout.classes
    assert {k: len(v) for k, v in index.splits().items()} == {
        k: v for k, v in layout.counts.items() if v is not None
    }
    assert (index.val is None) == (layout.counts["val"] is None)
    for samples in index.splits().values():
        assert {s.label for s in samples} == set(range(len(layout.classes)))  # every class in every split
        assert all(Path(s.path).is_file() for s in samples)
    known = [s for samples in index.splits().values() for s in samples if Path(s.path) == layout.known]
    assert len(known) == 1
    assert known[0].label == 0
    assert known[0].box == layout.known_box


@pytest.mark.parametrize("variant", CARS_VARIANTS)
def test_stanford_cars_layout_variants(variant: str, tmp_path: Path) -> None:
    layout = make_stanford_cars(tmp_path, variant)
    index = READERS["stanford_cars"](layout.root)
    assert index.classes == CAR_CLASSES
    assert (len(index.train), len(index.test)) == (6, 6)
    i = find(index.test, layout.known)
    assert index.test[i].box == KNOWN_BOX
    assert index.test[i].label == 0


def test_stanford_cars_matches_torchvision(tmp_path: Path) -> None:
    """On torchvision's own layout our parse gives torchvision's samples (image and label, in order) and classes."""
    from torchvision.datasets import StanfordCars

    layout = make_stanford_cars(tmp_path, "torchvision")
    index = READERS["stanford_cars"](layout.root)
    for split, samples in (("train", index.train), ("test", index.test)):
        tv = StanfordCars(layout.root, split=split)
        assert len(tv) == len(samples)
        for i, sample in enumerate(samples):
            image, label = tv[i]
            assert label == sample.label
            with Image.open(sample.path) as ours:
                assert np.array_equal(np.asarray(image), np.asarray(ours.convert("RGB")))
        assert tv.classes == index.classes


@pytest.mark.parametrize("variant", ["torchvision", "kaggle"])
def test_stanford_cars_labeled_test_annos_named(variant: str, tmp_path: Path) -> None:
    layout = make_stanford_cars(tmp_path, variant)
    base = tmp_path / "stanford_cars"
    for name in ("cars_test_annos_withlabels.mat", "cars_test_annos_withlabels (1).mat"):
        (base / name).unlink(missing_ok=True)
    assert (
        base / ("car_devkit/devkit" if variant == "kaggle" else "devkit") / "cars_test_annos.mat"
    ).exists()
    with pytest.raises(
        DatasetLayoutError, match=re.escape(str(base / "cars_test_annos_withlabels.mat"))
    ) as info:
        READERS["stanford_cars"](layout.root)
    assert "cars_test_annos.mat has none" in str(info.value)


def test_stanford_cars_download_is_refused_with_reason(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="cannot fetch Stanford Cars"):
        READERS["stanford_cars"](tmp_path, download=True)


@pytest.mark.parametrize(
    "name, relative",
    [
        ("cub200", "."),  # data.root = the CUB_200_2011 folder itself (also its parent, tested below)
        ("cub200", ".."),
        ("nabirds", ".."),
        ("fgvc_aircraft", "fgvc-aircraft-2013b"),
        ("flowers102", "flowers-102"),
        ("oxford_pets", "oxford-iiit-pet"),
        ("stanford_cars", "stanford_cars"),
    ],
)
def test_root_may_be_the_dataset_folder_or_its_parent(name: str, relative: str, tmp_path: Path) -> None:
    layout = build(name, tmp_path)
    index = READERS[name](layout.root / relative)
    assert index.classes == layout.classes


def _layout(key: str, base: Path) -> Layout:
    """Build ``name`` or ``name/variant`` (the Stanford Cars layouts)."""
    name, _, variant = key.partition("/")
    return make_stanford_cars(base, variant) if variant else build(name, base)


@pytest.mark.parametrize("key, relative", [(k, rel) for k, rels in KEY_FILES.items() for rel in rels])
def test_missing_key_file_is_named(key: str, relative: str, tmp_path: Path) -> None:
    layout = _layout(key, tmp_path)
    path = layout.root / relative
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(DatasetLayoutError, match=re.escape(str(path))):
        READERS[key.split("/")[0]](layout.root)


@pytest.mark.parametrize("name", DATASETS)
def test_empty_root_raises_layout_error_not_torchvision(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=re.escape(str(tmp_path))):
        READERS[name](tmp_path)


@pytest.mark.parametrize("name", ["cub200", "nabirds", "stanford_dogs"])
def test_download_true_says_there_is_no_download(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="data.download=true cannot fetch"):
        READERS[name](tmp_path, download=True)


@pytest.mark.parametrize("name", DATASETS)
def test_missing_listed_image_is_named(name: str, tmp_path: Path) -> None:
    layout = build(name, tmp_path)
    first = READERS[name](layout.root).train[0].path
    Path(first).unlink()
    with pytest.raises(DatasetLayoutError, match=re.escape(str(first))):
        READERS[name](layout.root)


def test_cub200_box_is_xywh_converted(tmp_path: Path) -> None:
    layout = make_cub200(tmp_path)
    line = (layout.root / "bounding_boxes.txt").read_text().splitlines()[3]
    assert line.split()[1:] == ["8.0", "6.0", "20.0", "15.0"]  # x y w h of the known image
    index = READERS["cub200"](layout.root)
    assert index.test[find(index.test, layout.known)].box == (6.0, 8.0, 21.0, 28.0)


def test_nabirds_sparse_ids_and_hierarchy(tmp_path: Path) -> None:
    layout = make_nabirds(tmp_path)
    index = READERS["nabirds"](layout.root)
    assert index.extras["class_ids"] == [295, 313, 1010]  # numeric order, not "1010" < "295"
    assert index.extras["hierarchy"] == {1: 0, 22: 0, 295: 1, 313: 1, 1010: 1}
    assert index.extras["node_names"][1] == "Perching Birds"
    assert index.classes == layout.classes


@pytest.mark.parametrize(
    "level, classes",
    [
        ("variant", ["707-320", "A300B4", "F-16A/B"]),
        ("family", ["A300", "Boeing 707", "F-16"]),
        ("manufacturer", ["Airbus", "Boeing", "Lockheed Martin"]),
    ],
)
def test_fgvc_aircraft_annotation_levels(level: str, classes: list[str], tmp_path: Path) -> None:
    layout = make_fgvc_aircraft(tmp_path)
    index = READERS["fgvc_aircraft"](layout.root, annotation_level=level)
    assert index.classes == classes
    assert (len(index.train), len(index.val), len(index.test)) == (6, 6, 6)
    assert not {s.path for s in index.train} & {s.path for s in index.val}  # never trainval
    assert index.test[find(index.test, layout.known)].box == KNOWN_BOX  # 1-based -> 0-based


def test_fgvc_aircraft_bad_level(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="annotation_level='model'"):
        READERS["fgvc_aircraft"](tmp_path, annotation_level="model")


@pytest.mark.parametrize(
    "mode, box", [("union", KNOWN_BOX), ("first", DOG_FIRST_BOX), ("largest", DOG_LARGEST_BOX)]
)
def test_stanford_dogs_box_modes(mode: str, box: tuple, tmp_path: Path) -> None:
    layout = make_stanford_dogs(tmp_path)
    index = READERS["stanford_dogs"](layout.root, box_mode=mode)
    assert index.test[find(index.test, layout.known)].box == box
    with pytest.raises(ConfigError, match="box_mode"):
        READERS["stanford_dogs"](layout.root, box_mode="mean")


def test_oxford_pets_head_boxes_trainval_only(tmp_path: Path) -> None:
    layout = make_oxford_pets(tmp_path)
    index = READERS["oxford_pets"](layout.root)
    assert all(s.box is not None for s in index.train)
    assert all(s.box is None for s in index.test)
    assert all(s.box is None for s in READERS["oxford_pets"](layout.root, head_boxes=False).train)


def test_flowers102_has_no_boxes(tmp_path: Path) -> None:
    layout = make_flowers102(tmp_path)
    index = READERS["flowers102"](layout.root)
    assert all(s.box is None for split in index.splits().values() for s in split)
    assert index.train[0].path.name == "image_00003.jpg"  # setid.mat ids are 1-based image numbers


@pytest.mark.parametrize("name", ["fgvc_aircraft", "flowers102", "oxford_pets"])
def test_preparers_do_nothing_without_download(name: str, tmp_path: Path) -> None:
    PREPARERS[name](tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize(
    "name, tv_class",
    [("fgvc_aircraft", "FGVCAircraft"), ("flowers102", "Flowers102"), ("oxford_pets", "OxfordIIITPet")],
)
def test_failed_download_is_one_layout_error(
    name: str, tv_class: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    calls = []

    def offline(*args, **kwargs):
        calls.append(kwargs)
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, tv_class, offline)
    with pytest.raises(DatasetLayoutError, match="data.download=true: fetching .* failed .*name resolution"):
        READERS[name](tmp_path / "data", download=True)
    assert calls and calls[0]["download"] is True


# ------------------------------------------------------------------------------------------- datamodule
EVAL_BOX = (4.0, 4.0, 24.0, 24.0)  # KNOWN_BOX on 40x30 -> Resize(40, 40) -> CenterCrop(32), offset 4
FLIP_BOX = (6.4, 9.6, 22.4, 25.6)  # KNOWN_BOX -> Resize(32, 32) -> horizontal flip: x -> 32 - x


def _split_of(dm: FGVCDataModule, path: Path) -> tuple[str, int]:
    for split, samples in dm.splits.items():
        hits = [i for i, s in enumerate(samples) if Path(s.path).resolve() == path.resolve()]
        if hits:
            return split, hits[0]
    raise AssertionError(f"{path} in no split")


@pytest.mark.parametrize("name", DATASETS)
def test_datamodule_batch_and_box_through_transforms(name: str, tmp_path: Path) -> None:
    layout = build(name, tmp_path)
    dm = FGVCDataModule(
        dataset=name, root=str(layout.root), image_size=32, batch_size=2, num_workers=0, crop_pct=0.8
    )
    dm.setup()
    assert dm.num_classes == len(layout.classes)
    n_train = layout.counts["train"]
    if layout.counts["val"] is None:  # held out: one image per class
        assert (len(dm.splits["train"]), len(dm.splits["val"])) == (n_train - 3, 3)
    else:
        assert (len(dm.splits["train"]), len(dm.splits["val"])) == (n_train, layout.counts["val"])
    assert len(dm.splits["test"]) == layout.counts["test"]

    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32)
    assert batch["label"].dtype == torch.long and batch["box"].shape == (2, 4)
    assert ((batch["box"] >= 0) & (batch["box"] <= 32)).all()

    split, i = _split_of(dm, layout.known)
    item = dm.dataset(split, train_transform=False)[i]
    if layout.known_box is None:
        assert not item["has_box"]
        assert item["box"].tolist() == [0.0, 0.0, 32.0, 32.0]  # whole frame
    else:
        assert item["has_box"]
        torch.testing.assert_close(item["box"], torch.tensor(EVAL_BOX))

        flip = FGVCDataModule(
            dataset=name,
            root=str(layout.root),
            image_size=32,
            batch_size=2,
            num_workers=0,
            crop_pct=1.0,
            hflip=1.0,
        )
        flip.setup()
        split, i = _split_of(flip, layout.known)
        torch.testing.assert_close(
            flip.dataset(split, train_transform=True)[i]["box"], torch.tensor(FLIP_BOX)
        )


def test_datamodule_passes_annotation_level(tmp_path: Path) -> None:
    layout = make_fgvc_aircraft(tmp_path)
    dm = FGVCDataModule(
        dataset="fgvc_aircraft",
        root=str(layout.root),
        image_size=32,
        num_workers=0,
        reader_options={"annotation_level": "manufacturer"},
    )
    assert dm.class_names == ["Airbus", "Boeing", "Lockheed Martin"]
    dm.prepare_data()  # the preparer accepts the reader's options; no download without data.download


def test_on_bad_image_skip_drops_and_counts(tmp_path: Path) -> None:
    layout = make_cub200(tmp_path)
    bad = READERS["cub200"](layout.root).test[-1].path
    truncate(bad)
    dm = FGVCDataModule(
        dataset="cub200",
        root=str(layout.root),
        image_size=32,
        batch_size=2,
        num_workers=0,
        on_bad_image="skip",
    )
    dm.setup()
    assert dm.skipped == {"train": 0, "val": 0, "test": 1}
    assert len(dm.splits["test"]) == 5
    assert bad not in {s.path for s in dm.splits["test"]}


def test_on_bad_image_error_names_the_file(tmp_path: Path) -> None:
    layout = make_cub200(tmp_path)
    bad = READERS["cub200"](layout.root).test[-1].path
    truncate(bad)
    dm = FGVCDataModule(dataset="cub200", root=str(layout.root), image_size=32, batch_size=2, num_workers=0)
    dm.setup()
    ds = dm.dataset("test")
    with pytest.raises(BadImageError, match=re.escape(str(bad))):
        for i in range(len(ds)):
            ds[i]


# ------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", DATASETS)
def test_data_config_instantiates_on_fixture(name: str, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    layout = build(name, tmp_path)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(overrides=[f"+data={name}", f"data.root={layout.root}", "data.num_workers=0"])
    assert cfg.data.dataset == name
    assert (cfg.data.image_size, cfg.data.crop_pct, cfg.data.batch_size) == (448, 0.875, 16)
    dm = instantiate(cfg.data, image_size=32)
    assert dm.class_names == layout.classes


# ------------------------------------------------------------------------------------------- end to end
TRAIN = REPO / "scripts" / "train.py"


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS)
def test_train_fast_dev_run(name: str, tmp_path: Path) -> None:
    layout = build(name, tmp_path / "data")
    cmd = [
        sys.executable,
        str(TRAIN),
        f"data={name}",
        f"data.root={layout.root}",
        "model=plain",
        "model.backbone.name=resnet18",
        "data.image_size=32",
        "data.num_workers=0",
        "trainer=cpu",
        "trainer.fast_dev_run=true",  # ++: add or override, whatever trainer/default.yaml holds
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "PROJECT_ROOT": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
