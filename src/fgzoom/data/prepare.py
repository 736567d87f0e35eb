"""Check a dataset without training: layout, counts per split and class, boxes, readable images."""

from __future__ import annotations

from fgzoom.data.datamodule import FGVCDataModule
from fgzoom.data.dataset import BadImageError, decode_errors


def check_dataset(datamodule: FGVCDataModule, check_images: bool = True) -> dict:
    """Prepare (generate / opt-in download), read the layout and set up the splits.

    With ``on_bad_image=error`` and ``check_images``, every image is decoded and the first unreadable
    one raises :class:`BadImageError`; with ``skip`` the unreadable ones are dropped and counted.

    Returns:
        ``{"dataset", "root", "classes", "splits": {split: {"images", "with_box"}}, "skipped"}``.
    """
    datamodule.prepare_data()
    datamodule.setup()
    if check_images and datamodule.on_bad_image == "error":
        for samples in datamodule.splits.values():
            error = next((e for e in decode_errors(samples, datamodule.num_workers) if e is not None), None)
            if error is not None:
                raise BadImageError(error)
    return {
        "dataset": datamodule.dataset_name,
        "root": str(datamodule.root),
        "classes": datamodule.num_classes,
        "splits": {
            split: {"images": len(samples), "with_box": sum(s.box is not None for s in samples)}
            for split, samples in datamodule.splits.items()
        },
        "skipped": dict(datamodule.skipped),
    }


def format_report(report: dict) -> str:
    lines = [f"{report['dataset']} at {report['root']}: {report['classes']} classes"]
    for split, counts in report["splits"].items():
        skipped = report["skipped"].get(split, 0)
        extra = f", {skipped} unreadable skipped" if skipped else ""
        lines.append(f"  {split:5s} {counts['images']:7d} images, {counts['with_box']:7d} with boxes{extra}")
    return "\n".join(lines)
