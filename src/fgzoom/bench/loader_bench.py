"""Will the GPU starve? Images/s of the project's loaders beside a plain torchvision uint8 loader.

Photo-like JPEGs (quality 90) of each size are written into an ImageFolder tree (4 classes, a ground-truth
box per image in ``boxes.csv``, the same files as train and test split). For each size and worker count:

* ``train``: the project's training loader, ``FGVCDataModule.train_dataloader()`` of the config composed
  from ``configs/train.yaml`` with ``data=imagefolder`` and the given overrides (448 px, crop_pct 0.875,
  batch 16 by default): decode, resize, random crop, flip, boxes, the sample's seed, uint8 collate;
* ``eval``: its ``test_dataloader()`` (resize, centre crop);
* ``reference``: ``torchvision.io.decode_jpeg`` -> ``v2.Resize((r, r))`` -> ``v2.RandomCrop(s)`` ->
  ``v2.RandomHorizontalFlip()`` on uint8 tensors, shuffled, ``default_collate`` (r = s / crop_pct);
* ``reference eval``: the same with ``v2.CenterCrop(s)`` and no flip.

``workers = 0`` loads in this process (with ``torch.set_num_threads(1)``: one process, one thread); ``n > 0``
uses n worker processes (one thread each, as the DataLoader sets them). A pass is one epoch; the first batch of
each pass (worker start, file cache) is not counted; passes are interleaved across loaders and the median
pass is reported. Nothing is normalized here: that happens on the device, after the copy.
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms import v2

SIZES = ((500, 375), (1024, 683))
CLASSES = 4


def photo_like(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A smooth random scene (bicubic upsampling of a coarse random grid) with fine grain noise, RGB."""
    coarse = rng.uniform(0, 255, (max(2, height // 48), max(2, width // 48), 3)).astype(np.uint8)
    scene = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    grain = rng.normal(0.0, 8.0, scene.shape).astype(np.float32)
    return Image.fromarray(np.clip(scene + grain, 0, 255).astype(np.uint8))


def write_jpeg_folder(root: Path, size: tuple[int, int], count: int, seed: int = 0) -> list[Path]:
    """``count`` photo-like ``size`` = (width, height) JPEGs (quality 90) as ``root/{train,test}/c<k>/<i>.jpg``
    (test hard-links train) with ``root/boxes.csv`` (a box in the middle half of each image). Returns the
    train files."""
    rng = np.random.default_rng(seed)
    width, height = size
    files, rows = [], []
    for i in range(count):
        relative = Path("train") / f"c{i % CLASSES}" / f"{i:04d}.jpg"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        photo_like(width, height, rng).save(path, quality=90)
        test = root / "test" / relative.relative_to("train")
        test.parent.mkdir(parents=True, exist_ok=True)
        test.hardlink_to(path)
        files.append(path)
        box = (height // 4, width // 4, 3 * height // 4, 3 * width // 4)
        rows += [(str(relative), *box), (str(test.relative_to(root)), *box)]
    with (root / "boxes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "y0", "x0", "y1", "x1"])
        writer.writerows(rows)
    return files


class _ReferenceImages(Dataset):
    """The torchvision uint8 reference: ``decode_jpeg`` and ``transform`` of each file."""

    def __init__(self, files: Sequence[Path], transform: Callable) -> None:
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(decode_jpeg(read_file(str(self.files[i]))))


def reference_loader(files: Sequence[Path], image_size: int, crop_pct: float, batch_size: int, workers: int,
                     train: bool) -> DataLoader:
    """The plain torchvision uint8 loader of the module docstring (``train``: random crop and flip)."""
    side = int(round(image_size / crop_pct))
    steps = [v2.Resize((side, side))]
    steps += [v2.RandomCrop(image_size), v2.RandomHorizontalFlip()] if train else [v2.CenterCrop(image_size)]
    return DataLoader(_ReferenceImages(files, v2.Compose(steps)), batch_size=batch_size, shuffle=train,
                      drop_last=train, num_workers=workers, persistent_workers=workers > 0)


def images_per_second(loader: Iterable) -> float:
    """One pass over ``loader``; images/s after its first batch."""
    iterator = iter(loader)
    next(iterator)
    count, start = 0, time.perf_counter()
    for batch in iterator:
        images = batch["image"] if isinstance(batch, dict) else batch
        count += images.shape[0]
    elapsed = time.perf_counter() - start
    return count / elapsed if elapsed > 0 and count else float("nan")


def measure(loaders: dict[str, Iterable], repeats: int) -> dict[str, float]:
    """Median images/s of each loader over ``repeats`` passes, interleaved (after one warm-up pass each)."""
    for loader in loaders.values():
        images_per_second(loader)
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(repeats):
        for name, loader in loaders.items():
            rates[name].append(images_per_second(loader))
    return {name: statistics.median(values) for name, values in rates.items()}


def worker_counts(cores: int) -> list[int]:
    """0 (this process), 1, 2 and ``cores`` workers, without repeats."""
    return sorted({0, 1, min(2, cores), cores})


def bench_loaders(
    make_datamodule: Callable[[Path, int, Sequence[str]], Any],
    root: Path,
    sizes: Sequence[tuple[int, int]] = SIZES,
    count: int = 256,
    workers: Sequence[int] = (0, 1, 2),
    repeats: int = 3,
    randaugment: str | None = "rand-m9-mstd0.5",
) -> list[dict[str, Any]]:
    """Images/s of the project's train and eval loaders and the references (module docstring), per image size
    and worker count; one row each. ``make_datamodule(root, workers, overrides)`` builds the project's
    FGVCDataModule for the folder (``overrides``: more config overrides); ``randaugment``: one more in-process
    row, the train loader with ``data.randaugment`` set to it (timm's, through PIL). JPEGs are written under
    ``root``."""
    threads = torch.get_num_threads()
    rows = []
    try:
        for width, height in sizes:
            folder = root / f"{width}x{height}"
            files = write_jpeg_folder(folder, (width, height), count)
            for n in workers:
                torch.set_num_threads(1 if n == 0 else threads)  # workers run one thread each anyway
                datamodule = make_datamodule(folder, n, [])
                datamodule.setup()
                loaders = {
                    "train": datamodule.train_dataloader(),
                    "reference": reference_loader(files, datamodule.image_size, datamodule.transform_args["crop_pct"],
                                                  datamodule.batch_size, n, train=True),
                    "eval": datamodule.test_dataloader(),
                    "reference eval": reference_loader(files, datamodule.image_size,
                                                       datamodule.transform_args["crop_pct"], datamodule.batch_size,
                                                       n, train=False),
                }
                rates = measure(loaders, repeats)
                rows.append({"size": f"{width}x{height}", "workers": n, "image_size": datamodule.image_size,
                             "batch_size": datamodule.batch_size, **{f"{k} img/s": v for k, v in rates.items()},
                             "train / reference": rates["train"] / rates["reference"],
                             "eval / reference eval": rates["eval"] / rates["reference eval"]})
                del loaders
            if randaugment:
                torch.set_num_threads(1)
                datamodule = make_datamodule(folder, 0, [f"data.randaugment={randaugment}"])
                datamodule.setup()
                rate = measure({"train": datamodule.train_dataloader()}, repeats)["train"]
                rows.append({"size": f"{width}x{height}", "workers": 0, "image_size": datamodule.image_size,
                             "batch_size": datamodule.batch_size, "train img/s": rate, "randaugment": randaugment})
    finally:
        torch.set_num_threads(threads)
    return rows


def workers_needed(rate: float, per_worker: float) -> int:
    """Loader workers (each ``per_worker`` images/s) that keep up with ``rate`` images/s of training steps."""
    return max(1, math.ceil(rate / per_worker)) if per_worker > 0 else 0


def format_loader_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`bench_loaders` rows (a RandAugment row has the train column only)."""
    lines = ["| images | workers | train img/s | torchvision ref img/s | train / ref | eval img/s | "
             "torchvision ref eval img/s | eval / ref |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "randaugment" in r:
            lines.append(f"| {r['size']} | {r['workers']} | {r['train img/s']:.0f} (with {r['randaugment']}) "
                         "| | | | | |")
            continue
        lines.append(
            f"| {r['size']} | {r['workers']} | {r['train img/s']:.0f} | {r['reference img/s']:.0f} | "
            f"{r['train / reference']:.2f} | {r['eval img/s']:.0f} | {r['reference eval img/s']:.0f} | "
            f"{r['eval / reference eval']:.2f} |"
        )
    return "\n".join(lines)


def format_workers_needed(rows: Sequence[dict[str, Any]], step_rate: float) -> str:
    """Per image size: how many workers keep up with ``step_rate`` images/s, from the one-worker rates."""
    lines = [f"workers needed for {step_rate:.0f} images/s (one-worker rate; each worker also takes a core):"]
    for r in rows:
        if r["workers"] == 1 and "randaugment" not in r:
            lines.append(f"  {r['size']}: train {workers_needed(step_rate, r['train img/s'])} "
                         f"({r['train img/s']:.0f} img/s per worker), eval {workers_needed(step_rate, r['eval img/s'])} "
                         f"({r['eval img/s']:.0f} img/s per worker)")
    return "\n".join(lines)
