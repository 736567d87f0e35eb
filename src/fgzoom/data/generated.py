"""Writing a generated dataset once, atomically, in ImageFolder layout (the synthetic and the cluttered real-object sets)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

SPEC_FILE = "spec.json"


def write_imagefolder(
    root: str | Path,
    class_names: Sequence[str],
    per_class: dict[str, int],
    render: Callable[[str, int, int], tuple[Image.Image, Sequence[int]]],
    spec_record: dict,
    files: dict[str, str] | None = None,
) -> Path:
    """Write ``root/<split>/<class>/<index:05d>.png``, ``boxes.csv`` (``path,y0,x0,y1,x1``), ``spec.json``
    and the text ``files`` (name -> content, e.g. a provenance table).

    Image ``index = label * per_class[split] + k`` of a split is ``render(split, label, index)`` ->
    ``(image, box)``. Everything goes to a temporary folder beside ``root`` that replaces ``root`` at the
    end, so an interrupted run never leaves a half-written dataset.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the dataset from other users
    try:
        rows = []
        for split, count in per_class.items():
            for label, name in enumerate(class_names):
                (tmp / split / name).mkdir(parents=True)
                for k in range(count):
                    index = label * count + k
                    image, box = render(split, label, index)
                    rel = f"{split}/{name}/{index:05d}.png"
                    image.save(tmp / rel, optimize=False)
                    rows.append([rel, *box])
        with (tmp / "boxes.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "y0", "x0", "y1", "x1"])
            writer.writerows(rows)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        (tmp / SPEC_FILE).write_text(json.dumps(spec_record, indent=2))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
