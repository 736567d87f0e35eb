"""NABirds (Cornell Lab of Ornithology) in the layout of ``nabirds.tar.gz``.

``data.root`` is the ``nabirds`` folder or its parent. The files follow CUB-200-2011's formats
(see :mod:`fgzoom.data.readers.cub200`) with UUID image ids, plus ``hierarchy.txt``::

    nabirds/
      images.txt  image_class_labels.txt  train_test_split.txt  bounding_boxes.txt
      classes.txt     <class_id> <class name with spaces>   (every node of the taxonomy)
      hierarchy.txt   <child_class_id> <parent_class_id>
      images/<4-digit class folder>/<uuid>.jpg

``classes.txt`` lists all 1011 taxonomy nodes but images are labelled with the 555 leaf classes
only; the ids are sparse. The leaves that occur in ``image_class_labels.txt`` are mapped to
``0..N-1`` in increasing id order. ``DatasetIndex.extras`` keeps the taxonomy:

- ``extras["class_ids"]``: the original NABirds id of each label ``0..N-1``;
- ``extras["hierarchy"]``: ``{child id: parent id}`` over original ids (all nodes);
- ``extras["node_names"]``: ``{id: name}`` for every node of ``classes.txt``.

Boxes are ``x y width height`` in 0-based pixels, converted to ``(y, x, y + h, x + w)``. There is
no official validation split.
"""

from __future__ import annotations

from pathlib import Path

from fgzoom.data.index import DatasetIndex, DatasetLayoutError, Sample
from fgzoom.data.readers.common import find_base, no_download_hint, read_table
from fgzoom.data.readers.cub200 import read_cub_format

FOLDER = "nabirds"
HINT = (
    "Request and download nabirds.tar.gz from https://dl.allaboutbirds.org/nabirds, extract it and "
    "pass data.root=/path/to/nabirds"
)


def read_nabirds(root: str | Path, download: bool = False) -> DatasetIndex:
    """Index NABirds at ``root`` (the ``nabirds`` folder or its parent).

    ``download`` exists only to say that NABirds cannot be downloaded automatically.
    """
    root = Path(root).expanduser()
    hint = no_download_hint(HINT, download, "NABirds")
    base = find_base(root, FOLDER, "images.txt")
    records, node_names = read_cub_format(base, "NABirds", hint, extra_files=("hierarchy.txt",))
    hierarchy_path = base / "hierarchy.txt"
    try:
        hierarchy = {int(child): int(parent[0]) for child, parent in read_table(hierarchy_path, 1).items()}
        class_ids = sorted({int(r.class_id) for r in records})
        names = {int(k): v for k, v in node_names.items()}
    except ValueError as e:
        raise DatasetLayoutError(f"{base}: NABirds class ids must be integers ({e}). {hint}") from e
    class_to_idx = {c: i for i, c in enumerate(class_ids)}
    samples = {True: [], False: []}
    for r in records:
        samples[r.is_train].append(Sample(r.path, class_to_idx[int(r.class_id)], r.box))
    return DatasetIndex(
        classes=[names[c] for c in class_ids],
        train=samples[True],
        test=samples[False],
        val=None,
        extras={"class_ids": class_ids, "hierarchy": hierarchy, "node_names": names},
    )
