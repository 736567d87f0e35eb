"""Prediction entry: classify image files with a checkpoint alone (no dataset) -> predictions.csv.

``predictions.csv``: ``path``, ``class_1, prob_1`` .. ``class_<top_k>, prob_<top_k>`` and, for the zoom model
with ``boxes=true`` (the default), its boxes ``box1_y0, box1_x0, box1_y1, box1_x1`` (.. ``box<k>_*`` with
``model.zoom.num_regions`` = k, the most salient region first) in pixels of the image file itself: continuous
edges, 0 the top/left edge of the file and ``H``/``W`` its bottom/right edge, 2 decimals, on the file as
decoded (no EXIF rotation, like training). The network sees the file resized (to ``image_size / crop_pct``,
square or shorter side, ``resize_mode``) and centre-cropped to ``image_size``; its boxes are mapped back through
both (:meth:`~fgzoom.eval.predictions.Predictions.boxes_on_files`), so with ``crop_pct`` < 1 they lie inside
the central part of the file the network saw, never in the border the crop cut off. The plain model writes no
box columns. ``scripts/eval.py``'s ``<split>_predictions.csv`` keeps its boxes on the network input, where the
dataset's ground-truth boxes and the localization metrics are.

The model, its class names and the eval transform (``image_size``, ``crop_pct``, ``resize_mode``, ``mean``,
``std`` of the run's ``data`` config) all come from the checkpoint, so an image gets exactly the
preprocessing ``scripts/eval.py`` gives it: decoded and resized as uint8 in the loader, normalized on the
device (:mod:`fgzoom.data.batches`). The images run through ``trainer.predict`` (``FGVCModule.predict_step``)
on the device ``trainer.*`` selects.
"""

from __future__ import annotations

import csv
import inspect
import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchvision.datasets.folder import IMG_EXTENSIONS

from fgzoom.checkpoints.io import (
    check_class_names,
    load_model,
    read_checkpoint_meta,
    saved_transform_config,
    trusts_checkpoints,
)
from fgzoom.cli.runtime import resolve_ckpt_path
from fgzoom.data.batches import LoaderDataModule, collate_uint8
from fgzoom.data.datamodule import FGVCDataModule
from fgzoom.data.dataset import BadImageError, FGVCDataset, read_image
from fgzoom.data.index import Sample
from fgzoom.data.transforms import build_transforms
from fgzoom.errors import ConfigError
from fgzoom.eval.figure_callback import PredictionFigures
from fgzoom.eval.predictions import box_cells, box_columns, check_one_device, gather_predictions
from fgzoom.models.backbone import backbone_normalization

log = logging.getLogger("fgzoom.cli.predict")

ON_BAD_IMAGE = ("error", "skip")
TRANSFORM_KEYS = ("image_size", "crop_pct", "resize_mode", "mean", "std")


def eval_transform_args(data: dict, backbone: str) -> dict:
    """The eval-transform arguments of a saved ``data`` config, with FGVCDataModule's defaults for missing
    keys. The normalization is the one saved (training records the numbers it used); a checkpoint without it
    gets the backbone's timm normalization (:func:`backbone_normalization`)."""
    defaults = {k: p.default for k, p in inspect.signature(FGVCDataModule.__init__).parameters.items()}
    args = {k: data.get(k, defaults[k]) for k in TRANSFORM_KEYS}
    if args["mean"] is None or args["std"] is None:
        mean, std = backbone_normalization(backbone)
        args["mean"] = mean if args["mean"] is None else args["mean"]
        args["std"] = std if args["std"] is None else args["std"]
    args["mean"], args["std"] = tuple(args["mean"]), tuple(args["std"])
    return args


def list_images(input_path: str) -> list[Path]:
    """An image file, or every image (by extension, recursively, sorted) under a folder."""
    path = Path(str(input_path)).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(
            f"input={input_path}: no such file or folder; pass input=<image file or folder of images>"
        )
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
    if not files:
        raise ConfigError(
            f"input={input_path}: no images ({', '.join(IMG_EXTENSIONS)}) found in this folder"
        )
    return files


def _readable(files: list[Path]) -> list[Path]:
    kept = []
    for path in files:
        try:
            read_image(path)
            kept.append(path)
        except BadImageError as e:
            log.warning("on_bad_image=skip: %s", str(e).split(";")[0])
    if not kept:
        raise ConfigError("on_bad_image=skip: none of the input images could be read")
    return kept


def _first_reason(error: BadImageError) -> str:
    """``cannot read image <path> (<why>)`` out of a BadImageError, also one re-raised from a worker."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if "BadImageError: " in last:
        last = last.split("BadImageError: ", 1)[1]
    return last.split("; ", 1)[0]


UNLABELLED_KEYS = ("image", "index", "file_size", "file_to_input")


def collate_unlabelled(items: list[dict]) -> dict:
    """Batch the ``image`` (uint8, :func:`collate_uint8`), ``index`` and, where the items have them, the file
    geometry (``file_size``, ``file_to_input``) of dataset items: files to predict have no label or box."""
    return collate_uint8([{k: v for k, v in item.items() if k in UNLABELLED_KEYS} for item in items])


def check_predict_options(cfg: DictConfig) -> None:
    """Validate ``top_k``, ``on_bad_image``, ``batch_size``, ``num_workers``, ``boxes`` (defaults in
    configs/predict.yaml)."""
    if int(cfg.top_k) < 1:
        raise ConfigError(f"top_k={cfg.top_k}: must be >= 1")
    if not isinstance(cfg.boxes, bool):
        raise ConfigError(f"boxes={cfg.boxes!r}: must be true or false")
    if cfg.on_bad_image not in ON_BAD_IMAGE:
        raise ConfigError(f"on_bad_image={cfg.on_bad_image!r}: must be one of {ON_BAD_IMAGE}")
    if int(cfg.batch_size) < 1 or int(cfg.num_workers) < 0:
        raise ConfigError(f"batch_size={cfg.batch_size}, num_workers={cfg.num_workers}: need >= 1 and >= 0")


def predict(cfg: DictConfig) -> Path:
    """Classify ``cfg.input`` with ``cfg.ckpt_path``; write ``<run>/predictions.csv`` (module docstring; and
    ``figures/`` with ``figures=true``). Returns the CSV path."""
    output_dir = Path(cfg.paths.output_dir)
    check_predict_options(cfg)
    path = resolve_ckpt_path(cfg.ckpt_path, str(output_dir))
    trust = trusts_checkpoints(cfg)
    meta = read_checkpoint_meta(path, trust)
    data = saved_transform_config(meta, path)  # values only: the eval transform's
    model = load_model(path, trust)
    names = meta.get("class_names") or model.hparams.class_names
    if not names:
        raise ConfigError(f"ckpt_path={path}: holds no class names")
    check_class_names(path, model.hparams.class_names, names, "its fgzoom entry")
    files = list_images(cfg.input)
    if cfg.on_bad_image == "skip":
        files = _readable(files)
    transform_args = eval_transform_args(data, model.hparams.backbone["name"])
    geometry = {k: v for k, v in transform_args.items() if k not in ("mean", "std")}
    dataset = FGVCDataset([Sample(p, -1) for p in files], build_transforms(train=False, **geometry),
                          file_geometry=True)
    loader = DataLoader(dataset, batch_size=int(cfg.batch_size), shuffle=False, num_workers=int(cfg.num_workers),
                        collate_fn=collate_unlabelled)
    callbacks = []
    if cfg.figures:
        callbacks.append(PredictionFigures(output_dir / "figures", files, names, transform_args["mean"],
                                           transform_args["std"]))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=callbacks)
    check_one_device(trainer, "predict")
    try:
        preds = gather_predictions(trainer.predict(
            model, datamodule=LoaderDataModule(loader, transform_args["mean"], transform_args["std"])))
    except BadImageError as e:  # also when re-raised from a DataLoader worker (message = its traceback)
        raise BadImageError(
            f"{_first_reason(e)}; replace or remove the file, or pass on_bad_image=skip"
        ) from e

    k = min(int(cfg.top_k), len(names))
    top = preds.probs.topk(k, dim=1)
    extra = box_columns(preds) if cfg.boxes else []
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = output_dir / "predictions.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", *[c for j in range(1, k + 1) for c in (f"class_{j}", f"prob_{j}")],
                         *[name for group in extra for name in group.names]])
        for row, i in enumerate(preds.index.tolist()):
            pairs = zip(top.indices[row].tolist(), top.values[row].tolist(), strict=True)
            writer.writerow([str(files[i]), *[c for c_idx, p in pairs for c in (names[c_idx], f"{p:.6f}")],
                             *[c for group in extra for c in box_cells(group.values, row, group.decimals)]])
    log.info("wrote %s (%d images, top-%d)", csv_path, len(files), k)
    if cfg.figures:
        log.info("wrote %d figures to %s", len(files), output_dir / "figures")
    return csv_path
