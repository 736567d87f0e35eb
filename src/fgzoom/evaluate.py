"""Evaluation entry: rebuild the model from a checkpoint and test it on a split -> metrics.json + extras.

Writes into the run folder:
    metrics.json                 ``<split>/acc``, ``acc_raw``, ``acc_zoom``, ``acc_top5``, ``acc_macro``, ``loss``,
                                 ``iou_mean`` and ``loc_acc@0.5`` (zoom model, GT boxes), ``acc_tta`` (eval.tta)
    confusion_matrix.csv/.png    counts (CSV, class names as header and index); row-normalized picture
    per_class_accuracy.csv       class, n, acc
    <split>_predictions.csv      one row per image: index, path, true and predicted class, probability
                                 (pred_tta, prob_tta with eval.tta), and for the zoom model its boxes
                                 box1_y0..box1_x1 (.. box<k>_* with k regions, most salient first) in input
                                 pixels: integers for sampler=slice, 2 decimals for sampler=affine
    figures/eval_grid.png        attention, zoom boxes, GT box and zoomed view for ``eval.num_images`` images

Localization (``iou_mean``, ``loc_acc@0.5``) scores region 1 (the most salient) against the GT box.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from fgzoom.errors import ConfigError
from fgzoom.eval.confusion import (
    confusion_matrix,
    write_confusion_csv,
    write_confusion_png,
    write_per_class_csv,
)
from fgzoom.eval.figures import save_figure, select_indices, zoom_grid, zoom_title
from fgzoom.eval.localization import localization_metrics
from fgzoom.eval.predictions import (
    Predictions,
    accuracy,
    box_cells,
    box_header,
    collect_predictions,
    tta_views,
)
from fgzoom.models.module import FGVCModule
from fgzoom.runtime import instantiate_loggers, pin_run_dir, resolve_ckpt_path, to_float_dict, write_json

log = logging.getLogger("fgzoom.eval")

EVAL_DEFAULTS = {
    "tta": False,
    "tta_hflip": True,
    "tta_thresholds": [0.3, 0.5, 0.7],
    "num_images": 16,
    "confusion": True,
    "predictions_csv": True,
}


def read_checkpoint_meta(path: str) -> dict:
    """The ``fgzoom`` entry of a checkpoint (class names and the run's resolved config)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    meta = checkpoint.get("fgzoom") if isinstance(checkpoint, dict) else None
    if not meta or "hyper_parameters" not in checkpoint:
        raise ConfigError(f"ckpt_path={path}: not an fgzoom checkpoint (no model config inside)")
    return meta


def load_model(path: str) -> FGVCModule:
    """Rebuild the LightningModule stored in ``path`` (no pretrained download; weights come from the file)."""
    try:
        model = FGVCModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise ConfigError(f"ckpt_path={path}: does not match the model it describes ({first})") from e
    return model


def check_class_names(path: str, trained: list[str] | None, other: list[str], what: str) -> None:
    """Raise a one-line ConfigError when the checkpoint's class names differ from ``other``."""
    if trained is not None and list(trained) != list(other):
        raise ConfigError(
            f"ckpt_path={path}: trained on {len(trained)} classes ({list(trained)[:3]}...), {what} has "
            f"{len(other)} ({list(other)[:3]}...); pass the data it was trained on"
        )


def datamodule_for(cfg: DictConfig, meta: dict):
    """``data`` from the command line when given, else the data the checkpoint was trained on. A command-line
    data config with ``mean``/``std`` null takes the checkpoint's normalization (the model was trained on it)."""
    saved = (meta.get("config") or {}).get("data") or {}
    data_cfg = cfg.get("data")
    if not data_cfg:
        if not saved:
            raise ConfigError("the checkpoint holds no data config: pass data=<name> data.root=...")
        data_cfg = OmegaConf.create(saved)
    else:
        with open_dict(cfg):  # in place: the node keeps its parent, so ${paths...} still resolve
            for key in ("mean", "std"):
                if data_cfg.get(key) is None and saved.get(key) is not None:
                    data_cfg[key] = list(saved[key])
    return hydra.utils.instantiate(data_cfg)


def eval_options(cfg: DictConfig) -> dict:
    """``eval.*`` with defaults filled in, validated."""
    given = OmegaConf.to_container(cfg.eval, resolve=True) if cfg.get("eval") is not None else {}
    unknown = sorted(set(given) - set(EVAL_DEFAULTS))
    if unknown:
        raise ConfigError(f"eval: unknown keys {unknown}; valid: {sorted(EVAL_DEFAULTS)}")
    options = {**EVAL_DEFAULTS, **given}
    if int(options["num_images"]) < 0:
        raise ConfigError(f"eval.num_images={options['num_images']}: must be >= 0 (0 disables the grid)")
    if options["tta"] and not options["tta_hflip"] and not options["tta_thresholds"]:
        raise ConfigError("eval.tta=true needs eval.tta_hflip=true or a list in eval.tta_thresholds")
    return options


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on ``cfg.split`` (test by default); write ``<run dir>/metrics.json`` and the
    extras listed in the module docstring. Returns the metrics."""
    output_dir = Path(cfg.paths.output_dir)
    pin_run_dir(str(output_dir))
    options = eval_options(cfg)
    path = resolve_ckpt_path(cfg.ckpt_path, str(output_dir))
    meta = read_checkpoint_meta(path)
    datamodule = datamodule_for(cfg, meta)
    datamodule.prepare_data()
    names = datamodule.class_names
    model = load_model(path)
    check_class_names(path, model.hparams.class_names, names, "data")
    split = cfg.get("split", "test")
    if split not in ("test", "val"):
        raise ConfigError(f"split={split!r}: must be test or val")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False, callbacks=[])
    if split == "test":
        results = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    else:
        results = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    metrics = to_float_dict(results)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics.update(
            evaluate_extras(
                model,
                datamodule,
                trainer,
                split,
                names,
                output_dir,
                options,
                metrics,
                ckpt_name=Path(path).name,
            )
        )
        write_json(output_dir / "metrics.json", metrics)
        log.info("metrics: %s", {k: round(v, 4) for k, v in metrics.items() if v is not None})
    return metrics


def evaluate_extras(
    model: FGVCModule,
    datamodule,
    trainer: L.Trainer,
    split: str,
    names: list[str],
    output_dir: Path,
    options: dict,
    metrics: dict[str, float],
    ckpt_name: str = "checkpoint",
) -> dict[str, float]:
    """One more pass over ``split`` (same loader, device and precision as ``trainer``) for the confusion
    matrix, per-class accuracy, TTA, localization and the picture grid. Returns metrics to add."""
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    views = (
        tta_views(model, bool(options["tta_hflip"]), options["tta_thresholds"]) if options["tta"] else None
    )
    precision = trainer.strategy.precision_plugin
    preds = collect_predictions(
        model,
        loader,
        device=trainer.strategy.root_device,
        tta=views,
        forward_context=precision.forward_context,
        convert_input=precision.convert_input,
    )
    extra: dict[str, float] = {}
    top1 = accuracy(preds.probs["fused"], preds.labels)
    if metrics.get(f"{split}/acc") is not None and abs(top1 - metrics[f"{split}/acc"]) > 1e-6:
        log.warning(
            "the extra evaluation pass gives top-1 %.6f, trainer.%s gave %.6f (nondeterministic kernels?)",
            top1,
            split,
            metrics[f"{split}/acc"],
        )
    if preds.boxes is not None and preds.has_box is not None:
        for key, value in localization_metrics(preds.boxes, preds.gt_boxes, preds.has_box).items():
            if metrics.get(f"{split}/{key}") is None:
                extra[f"{split}/{key}"] = value
    if "tta" in preds.probs:
        extra[f"{split}/acc_tta"] = accuracy(preds.probs["tta"], preds.labels)
        log.info("TTA over %d views: %s", len(preds.tta_views), ", ".join(preds.tta_views))
    if options["confusion"]:
        matrix = confusion_matrix(preds.probs["fused"], preds.labels, len(names))
        write_confusion_csv(output_dir / "confusion_matrix.csv", matrix, names)
        write_per_class_csv(output_dir / "per_class_accuracy.csv", matrix, names)
        title = f"{split} confusion matrix, {len(names)} classes, top-1 {top1:.3f} (rows normalized)"
        write_confusion_png(output_dir / "confusion_matrix.png", matrix, names, title)
    dataset = datamodule.dataset(split)
    if options["predictions_csv"]:
        write_split_predictions(output_dir / f"{split}_predictions.csv", preds, dataset, names)
    indices = select_indices(int(options["num_images"]), len(dataset))
    if indices:
        mean, std = datamodule.transform_args["mean"], datamodule.transform_args["std"]
        title = f"{split} images, {ckpt_name}"
        if model.is_zoom:
            title += f" ({zoom_title(model.net.config)})"
        fig = zoom_grid(model, dataset, indices, names, mean, std, title)
        log.info("wrote %s", save_figure(fig, output_dir / "figures" / "eval_grid.png"))
    return extra


def write_split_predictions(path: Path, preds: Predictions, dataset, names: list[str]) -> None:
    """``<split>_predictions.csv``: index, path, true, pred, prob (and pred_tta, prob_tta with TTA), then the
    zoom model's boxes (:func:`fgzoom.eval.predictions.box_header`: box1_y0 .. box<k>_x1, input pixels)."""
    conf, pred = preds.probs["fused"].max(dim=1)
    tta = preds.probs["tta"].max(dim=1) if "tta" in preds.probs else None
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "path", "true", "pred", "prob", *(["pred_tta", "prob_tta"] if tta else []),
                         *box_header(preds.boxes)])
        for row, (i, label) in enumerate(zip(preds.index.tolist(), preds.labels.tolist(), strict=True)):
            cells = [
                i,
                str(dataset.samples[i].path),
                names[label],
                names[int(pred[row])],
                f"{float(conf[row]):.6f}",
            ]
            if tta:
                cells += [names[int(tta.indices[row])], f"{float(tta.values[row]):.6f}"]
            writer.writerow([*cells, *box_cells(preds.boxes, row)])
