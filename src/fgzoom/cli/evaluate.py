"""Evaluation entry: rebuild the model from a checkpoint and test it on a split -> metrics.json + extras.

One ``trainer.predict`` pass over the split (``FGVCModule.predict_step``, with the test-time-augmentation views
of ``eval.tta`` as its argument) gives every number and file below; the metrics are the module's own
(``SplitMetrics``, the same as ``trainer.test`` logs).

Writes into the run folder:
    metrics.json                 ``<split>/acc``, ``acc_raw``, ``acc_zoom``, ``acc_top5``, ``acc_macro``, ``loss``,
                                 ``degenerate_frac``, ``iou_mean``, ``loc_acc@0.5``, ``box_dy``, ``box_dx`` and
                                 ``box_center_err`` (zoom model, GT boxes),
                                 ``maxboxacc_v2``, ``maxboxacc@0.3``, ``@0.5``, ``@0.7`` (attention map, GT
                                 boxes), ``boxacc_v2@val_tau`` (split=test, checkpoint with val thresholds),
                                 ``acc_tta`` (eval.tta)
    confusion_matrix.csv/.png    counts (CSV, class names as header and index); row-normalized picture
    per_class_accuracy.csv       class, n, acc
    <split>_predictions.csv      one row per image: index, path, true and predicted class, probability
                                 (pred_tta, prob_tta with eval.tta), and for the zoom model its boxes
                                 box1_y0..box1_x1 (.. box<k>_* with k regions, most salient first) in input
                                 pixels: integers for sampler=slice, 2 decimals for the float-box samplers
    figures/eval_grid.png        attention, zoom boxes, GT box and zoomed view for ``eval.num_images`` images

Localization (``iou_mean``, ``loc_acc@0.5``, and the box-centre error ``box_dy``/``box_dx``, the mean signed offset
in input pixels of the box's centre from the GT box's, positive below / right, and ``box_center_err``, the mean
distance) scores region 1 (the most salient) against the GT box. MaxBoxAccV2
(``maxboxacc_v2``: Choe et al., CVPR 2020) scores the attention map itself, at the map threshold best on the
evaluated split (the oracle number papers report); ``boxacc_v2@val_tau`` at the thresholds the checkpoint's last
validation chose (``FGVCModule.val_box_tau``), the number without test-set selection.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, open_dict
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from fgzoom.callbacks.loggers import finalize_loggers, log_figure
from fgzoom.checkpoints.io import (
    check_class_names,
    load_model,
    read_checkpoint_meta,
    saved_data_config,
    trusts_checkpoints,
)
from fgzoom.cli.runtime import instantiate_loggers, pin_run_dir, resolve_ckpt_path, to_float_dict, write_json
from fgzoom.data.batches import LoaderDataModule
from fgzoom.data.datamodule import FGVCDataModule
from fgzoom.errors import ConfigError
from fgzoom.eval.confusion import (
    confusion_matrix,
    write_confusion_csv,
    write_confusion_png,
    write_per_class_csv,
)
from fgzoom.eval.figures import save_figure, select_indices, zoom_grid
from fgzoom.eval.predictions import (
    Predictions,
    box_cells,
    box_header,
    check_one_device,
    gather_predictions,
    tta_views,
    view_name,
)
from fgzoom.models.metrics import SplitMetrics
from fgzoom.models.module import FGVCModule

log = logging.getLogger("fgzoom.eval")

SPLITS = ("test", "val")


def datamodule_for(cfg: DictConfig, meta: dict, path: str):
    """``data`` from the command line when given, else the data the checkpoint was trained on, built as
    ``FGVCDataModule`` from the saved values (:func:`saved_data_config`: nothing the file names is instantiated).
    A command-line data config with ``mean``/``std`` null takes the checkpoint's normalization (the model was
    trained on it)."""
    data_cfg = cfg.get("data")
    saved = saved_data_config(meta, path, strict=not data_cfg)
    if not data_cfg:
        if not saved:
            raise ConfigError("the checkpoint holds no data config: pass data=<name> data.root=...")
        try:
            return FGVCDataModule(**saved)
        except (TypeError, ValueError) as e:  # a value of the wrong kind (ConfigError lines pass through)
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"ckpt_path={path}: its saved data config does not fit fgzoom's datamodule "
                              f"({str(e).splitlines()[0][:200]}); pass data=<name> data.root=...") from e
    with open_dict(cfg):  # in place: the node keeps its parent, so ${paths...} still resolve
        for key in ("mean", "std"):
            if data_cfg.get(key) is None and isinstance(saved.get(key), list):  # numbers (saved_data_config)
                data_cfg[key] = [float(v) for v in saved[key]]
    return hydra.utils.instantiate(data_cfg)


def check_eval_options(cfg: DictConfig) -> None:
    """Validate ``split`` and ``eval.*`` (their defaults are in ``configs/eval.yaml``)."""
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r}: must be one of {', '.join(SPLITS)}")
    options = cfg.eval
    if int(options.num_images) < 0:
        raise ConfigError(f"eval.num_images={options.num_images}: must be >= 0 (0 disables the grid)")
    if options.tta and not options.tta_hflip and not options.tta_thresholds:
        raise ConfigError("eval.tta=true needs eval.tta_hflip=true or a list in eval.tta_thresholds")


def split_metrics(
    split: str, model: FGVCModule, outputs: Sequence[Mapping[str, Tensor]], preds: Predictions,
    grid: tuple[int, int],
) -> dict[str, float]:
    """The module's metrics of ``split`` (``SplitMetrics``, MaxBoxAccV2 included, on the images' ``grid`` (H, W))
    over the ``predict_step`` outputs, plus ``<split>/acc_tta`` when the outputs have TTA probabilities; on test
    ``boxacc_v2@val_tau`` at the model's ``val_box_tau`` when it has one."""
    metrics = SplitMetrics(split, model.hparams.num_classes, model.net.branches, box_accuracy=True)
    for out in outputs:
        out = {key: value.detach().cpu() for key, value in out.items()}
        metrics.update(out, out["label"], out["loss"], out, grid=grid, offset=model.net.offset)
    values = to_float_dict(metrics.compute(val_tau=model.val_box_tau if split == "test" else None))
    if preds.probs_tta is not None:
        tta = MulticlassAccuracy(model.hparams.num_classes, top_k=1, average="micro")
        values[f"{split}/acc_tta"] = float(tta(preds.probs_tta, preds.labels))
    return values


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on ``cfg.split`` (test by default); write ``<run dir>/metrics.json`` and the
    extras listed in the module docstring. Returns the metrics."""
    output_dir = Path(cfg.paths.output_dir)
    pin_run_dir(str(output_dir))
    check_eval_options(cfg)
    path = resolve_ckpt_path(cfg.ckpt_path, str(output_dir))
    trust = trusts_checkpoints(cfg)
    meta = read_checkpoint_meta(path, trust)
    datamodule = datamodule_for(cfg, meta, path)
    datamodule.prepare_data()
    names = datamodule.class_names
    model = load_model(path, trust)
    check_class_names(path, model.hparams.class_names, names, "data")
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False, callbacks=[])
    check_one_device(trainer, "eval")
    if cfg.eval.tta:
        model.set_tta(tta_views(model, bool(cfg.eval.tta_hflip), list(cfg.eval.tta_thresholds or [])))
        log.info("TTA over %d views: %s", len(model.tta), ", ".join(view_name(*view) for view in model.tta))
    split = cfg.split
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    outputs = trainer.predict(model, datamodule=LoaderDataModule(loader, *datamodule.normalization()))
    preds = gather_predictions(outputs)
    grid = (datamodule.image_size, datamodule.image_size)  # the loaded images (square), where GT boxes live
    metrics = split_metrics(split, model, outputs, preds, grid)
    for logger in trainer.loggers:  # what trainer.test would have logged
        logger.log_metrics({k: v for k, v in metrics.items() if v is not None}, step=0)
        logger.save()
    output_dir.mkdir(parents=True, exist_ok=True)
    write_extras(model, datamodule, split, names, preds, output_dir, cfg.eval, metrics, Path(path).name,
                 trainer.loggers)
    finalize_loggers(trainer.loggers)
    write_json(output_dir / "metrics.json", metrics)
    log.info("metrics: %s", {k: round(v, 4) for k, v in metrics.items() if v is not None})
    return metrics


def write_extras(
    model: FGVCModule,
    datamodule,
    split: str,
    names: list[str],
    preds: Predictions,
    output_dir: Path,
    options: DictConfig,
    metrics: dict[str, float],
    ckpt_name: str,
    loggers: Sequence[Logger] = (),
) -> None:
    """The confusion matrix, per-class accuracy and per-image CSV from ``preds``, and the picture grid; the
    two pictures also go to every logger in ``loggers`` that takes images."""
    if options.confusion:
        matrix = confusion_matrix(preds.probs, preds.labels, len(names))
        write_confusion_csv(output_dir / "confusion_matrix.csv", matrix, names)
        write_per_class_csv(output_dir / "per_class_accuracy.csv", preds.probs, preds.labels, names)
        title = (f"{split} confusion matrix, {len(names)} classes, top-1 {metrics[f'{split}/acc']:.3f} "
                 "(rows normalized)")
        fig = write_confusion_png(output_dir / "confusion_matrix.png", matrix, names, title)
        log_figure(loggers, fig, step=0, tag="figures/confusion_matrix")
    dataset = datamodule.dataset(split)
    if options.predictions_csv:
        write_split_predictions(output_dir / f"{split}_predictions.csv", preds, dataset, names)
    indices = select_indices(int(options.num_images), len(dataset))
    if indices:
        mean, std = datamodule.transform_args["mean"], datamodule.transform_args["std"]
        fig = zoom_grid(model, dataset, indices, names, mean, std, f"{split} images, {ckpt_name}")
        log.info("wrote %s", save_figure(fig, output_dir / "figures" / "eval_grid.png"))
        log_figure(loggers, fig, step=0, tag="figures/eval_grid")


def write_split_predictions(path: Path, preds: Predictions, dataset, names: list[str]) -> None:
    """``<split>_predictions.csv``: index, path, true, pred, prob (and pred_tta, prob_tta with TTA), then the
    zoom model's boxes (:func:`fgzoom.eval.predictions.box_header`: box1_y0 .. box<k>_x1, input pixels)."""
    conf, pred = preds.probs.max(dim=1)
    tta = preds.probs_tta.max(dim=1) if preds.probs_tta is not None else None
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
