"""prepare_data.py and train.py on missing roots and corrupt images: one line, non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import run_script_here

FAST = ["model=plain", "model.backbone.name=resnet18", "data.image_size=32", "data.num_workers=0",
        "trainer=cpu", "debug=fast"]


def make_imagefolder(root: Path, corrupt: bool = False) -> Path:
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), (40 * i, 100, 200 if cls == "a" else 0)).save(folder / f"{i}.jpg")
    if corrupt:
        good = (root / "test" / "a" / "0.jpg").read_bytes()
        (root / "test" / "a" / "0.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    return root


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_prepare_data_reports_counts(tmp_path):
    root = make_imagefolder(tmp_path / "ds")
    result = run_script_here("prepare_data.py", "data=imagefolder", f"data.root={root}", "data.num_workers=0",
                        f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 classes" in result.stdout
    assert "test        4 images" in result.stdout


@pytest.mark.parametrize("script", ["prepare_data.py", "train.py"])
def test_missing_root_is_one_line_naming_the_path(script, tmp_path):
    missing = tmp_path / "no_such_dataset"
    result = run_script_here(script, "data=cub200", f"data.root={missing}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(missing) in last_line(result.stderr)


def test_incomplete_root_names_the_missing_file(tmp_path):
    root = tmp_path / "CUB_200_2011"
    (root / "images").mkdir(parents=True)
    result = run_script_here("train.py", "data=cub200", f"data.root={root}", *FAST, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert ".txt" in last_line(result.stderr) and str(root) in last_line(result.stderr)


def test_corrupt_image_is_named_by_prepare_and_train(tmp_path):
    root = make_imagefolder(tmp_path / "ds", corrupt=True)
    bad = root / "test" / "a" / "0.jpg"
    prepared = run_script_here("prepare_data.py", "data=imagefolder", f"data.root={root}", "data.num_workers=0",
                          f"hydra.run.dir={tmp_path / 'p'}")
    assert prepared.returncode != 0
    assert str(bad) in last_line(prepared.stderr)
    trained = run_script_here("train.py", "data=imagefolder", f"data.root={root}", *FAST, "data.batch_size=8",
                         f"hydra.run.dir={tmp_path / 't'}")
    assert trained.returncode != 0
    assert "Traceback" not in trained.stderr
    assert str(bad) in last_line(trained.stderr)


def test_corrupt_image_is_skipped_and_counted(tmp_path):
    root = make_imagefolder(tmp_path / "ds", corrupt=True)
    result = run_script_here("prepare_data.py", "data=imagefolder", f"data.root={root}", "data.on_bad_image=skip",
                        "data.num_workers=0", f"hydra.run.dir={tmp_path / 'p'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test        3 images" in result.stdout and "1 unreadable skipped" in result.stdout
