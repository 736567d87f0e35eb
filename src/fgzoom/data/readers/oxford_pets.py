"""Oxford-IIIT Pet (37 breeds) through :class:`torchvision.datasets.OxfordIIITPet`, plus head boxes.

``data.root`` is the folder holding ``oxford-iiit-pet/`` (torchvision's root) or that folder itself::

    oxford-iiit-pet/
      images/<Breed_name>_<n>.jpg
      annotations/trainval.txt  annotations/test.txt    <image> <class 1..37> <species> <breed id>
      annotations/xmls/<image>.xml                      head box (Pascal VOC), trainval images only

Splits: the official ``trainval`` is the training split and ``test`` the test split; there is no
official validation split, so the datamodule holds one out of ``trainval``. Class names are
torchvision's (``american_bulldog`` -> ``American Bulldog``).

Boxes (``head_boxes=True``): the pet's head from ``annotations/xmls``, VOC 1-based inclusive ->
``(ymin - 1, xmin - 1, ymax, xmax)``. The publishers annotated heads for the trainval images only,
so test images (and the few trainval images without an XML) have no box.

``data.download=true`` lets torchvision fetch images and annotations (in ``prepare_data``).
"""

from __future__ import annotations

from pathlib import Path

from fgzoom.data.index import DatasetIndex, DatasetLayoutError, Sample, require_path
from fgzoom.data.readers.stanford_dogs import combine_boxes, read_voc_boxes

FOLDER = "oxford-iiit-pet"
HINT = (
    "Download images.tar.gz and annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/ into a "
    "folder named oxford-iiit-pet and pass data.root=<its parent>, or set data.download=true"
)


def _torchvision_root(root: Path) -> Path:
    return root.parent if root.name == FOLDER else root


def _key_files(base: Path) -> list[tuple[Path, str]]:
    return [
        (base / "images", "Oxford-IIIT Pet images folder"),
        (base / "annotations" / "trainval.txt", "Oxford-IIIT Pet trainval list"),
        (base / "annotations" / "test.txt", "Oxford-IIIT Pet test list"),
    ]


def prepare_oxford_pets(root: str | Path, head_boxes: bool = True, download: bool = False) -> None:
    """Download the dataset with torchvision when ``download`` and a key file is missing."""
    tv_root = _torchvision_root(Path(root).expanduser())
    if download and not all(p.exists() for p, _ in _key_files(tv_root / FOLDER)):
        from torchvision.datasets import OxfordIIITPet

        tv_root.mkdir(parents=True, exist_ok=True)
        try:
            OxfordIIITPet(tv_root, split="trainval", download=True)
        except Exception as e:  # urllib/HTTP/tar/MD5 errors: say what failed and how to do it by hand
            raise DatasetLayoutError(
                f"data.download=true: fetching Oxford-IIIT Pet into {tv_root / FOLDER} failed "
                f"({type(e).__name__}: {e}). {HINT}"
            ) from e


def read_oxford_pets(root: str | Path, head_boxes: bool = True, download: bool = False) -> DatasetIndex:
    """Index Oxford-IIIT Pet at ``root``: ``trainval`` -> train, ``test`` -> test.

    Args:
        head_boxes: attach the head boxes of ``annotations/xmls`` where they exist.
        download: fetch the archives with torchvision if the layout is missing.
    """
    from torchvision.datasets import OxfordIIITPet

    tv_root = _torchvision_root(Path(root).expanduser())
    if download:
        prepare_oxford_pets(tv_root, download=True)
    base = tv_root / FOLDER
    for path, what in _key_files(base):
        require_path(path, what, HINT)
    xml_dir = base / "annotations" / "xmls"

    classes: list[str] = []
    splits: dict[str, list[Sample]] = {}
    for split in ("trainval", "test"):
        list_path = base / "annotations" / f"{split}.txt"
        try:
            ds = OxfordIIITPet(tv_root, split=split, download=False)
            images, labels = ds._images, ds._labels  # torchvision keeps the parsed lists private
        except ValueError as e:
            raise DatasetLayoutError(
                f"{list_path}: expected '<image> <class> <species> <breed>' lines ({e})"
            ) from e
        if split == "trainval":
            classes = list(ds.classes)
        samples = []
        for image, label in zip(images, labels, strict=True):
            xml = xml_dir / f"{Path(image).stem}.xml"
            box = combine_boxes(read_voc_boxes(xml), "first") if head_boxes and xml.is_file() else None
            samples.append(Sample(Path(image), int(label), box))
        if not samples:
            raise DatasetLayoutError(f"{list_path} lists no images. {HINT}")
        require_path(samples[0].path, f"image listed in {split}.txt", HINT)
        splits[split] = samples
    if max(s.label for s in splits["test"]) >= len(classes):
        raise DatasetLayoutError(f"{base / 'annotations' / 'test.txt'}: a class id has no trainval images")
    return DatasetIndex(classes=classes, train=splits["trainval"], test=splits["test"], val=None)
