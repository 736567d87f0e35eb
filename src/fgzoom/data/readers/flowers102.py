"""Oxford 102 Flowers in torchvision's :class:`~torchvision.datasets.Flowers102` layout.

``data.root`` is the folder holding ``flowers-102/`` (torchvision's root) or that folder itself::

    flowers-102/
      jpg/image_00001.jpg ...
      imagelabels.mat     labels: class (1..102) of image k at position k-1
      setid.mat           trnid, valid, tstid: 1-based image numbers of train / val / test

The official splits are used (10 train and 10 val images per class, the rest test). The ``.mat``
files are parsed here the way torchvision parses them, because torchvision also insists on their
MD5 sums, which rejects re-hosted copies; torchvision is still what downloads the set
(``data.download=true``, in ``prepare_data``) and names the classes. No boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fgzoom.data.index import DatasetIndex, DatasetLayoutError, Sample, require_path

FOLDER = "flowers-102"
SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}
HINT = (
    "Download 102flowers.tgz, imagelabels.mat and setid.mat from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ "
    "into a folder named flowers-102 and pass data.root=<its parent>, or set data.download=true"
)


def _base(root: Path) -> Path:
    """The ``flowers-102`` folder: ``root`` if so named or holding ``setid.mat``/``jpg/``, else ``root/flowers-102``."""
    if root.name == FOLDER or (root / "setid.mat").exists() or (root / "jpg").is_dir():
        return root
    return root / FOLDER


def _key_files(base: Path) -> list[tuple[Path, str]]:
    return [
        (base / "jpg", "Flowers102 images folder"),
        (base / "imagelabels.mat", "Flowers102 labels"),
        (base / "setid.mat", "Flowers102 split ids"),
    ]


def prepare_flowers102(root: str | Path, download: bool = False) -> None:
    """Download the dataset with torchvision when ``download`` and a key file is missing."""
    base = _base(Path(root).expanduser())
    if download and not all(p.exists() for p, _ in _key_files(base)):
        from torchvision.datasets import Flowers102

        base.parent.mkdir(parents=True, exist_ok=True)
        # torchvision downloads into <its root>/flowers-102; a base not named so gets a flowers-102 inside
        tv_root = base.parent if base.name == FOLDER else base
        try:
            Flowers102(tv_root, split="train", download=True)
        except Exception as e:  # urllib/HTTP/tar/MD5 errors: say what failed and how to do it by hand
            raise DatasetLayoutError(
                f"data.download=true: fetching Flowers102 into {base} failed ({type(e).__name__}: {e}). {HINT}"
            ) from e


def _class_names(num_classes: int) -> list[str]:
    from torchvision.datasets import Flowers102

    names = list(getattr(Flowers102, "classes", []))
    if len(names) >= num_classes:
        return names[:num_classes]
    return [f"class_{i:03d}" for i in range(1, num_classes + 1)]


def read_flowers102(root: str | Path, download: bool = False) -> DatasetIndex:
    """Index Flowers102 at ``root`` with the official train/val/test splits of ``setid.mat``."""
    from scipy.io import loadmat

    root = Path(root).expanduser()
    if download:
        prepare_flowers102(root, download=True)
    base = _base(root)
    for path, what in _key_files(base):
        require_path(path, what, HINT)
    try:
        labels = np.atleast_1d(loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"]).astype(int)
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise DatasetLayoutError(
            f"{base / 'imagelabels.mat'}: expected a 'labels' vector ({e}). {HINT}"
        ) from e
    try:
        set_ids = loadmat(base / "setid.mat", squeeze_me=True)
        ids = {split: np.atleast_1d(set_ids[key]).astype(int).tolist() for split, key in SPLIT_KEYS.items()}
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise DatasetLayoutError(
            f"{base / 'setid.mat'}: expected trnid, valid and tstid ({e}). {HINT}"
        ) from e

    num_classes = int(labels.max())
    if labels.min() < 1:
        raise DatasetLayoutError(f"{base / 'imagelabels.mat'}: labels must start at 1, found {labels.min()}")
    splits: dict[str, list[Sample]] = {}
    for split, image_ids in ids.items():
        bad = [i for i in image_ids if not 1 <= i <= len(labels)]
        if bad or not image_ids:
            raise DatasetLayoutError(
                f"{base / 'setid.mat'}: {SPLIT_KEYS[split]} is empty or has ids outside 1..{len(labels)} "
                f"of imagelabels.mat (e.g. {bad[:3]})"
            )
        splits[split] = [
            Sample(base / "jpg" / f"image_{i:05d}.jpg", int(labels[i - 1]) - 1) for i in image_ids
        ]
        require_path(splits[split][0].path, f"image listed in setid.mat ({SPLIT_KEYS[split]})", HINT)
    return DatasetIndex(
        classes=_class_names(num_classes), train=splits["train"], val=splits["val"], test=splits["test"]
    )
