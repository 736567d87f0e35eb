"""The LightningModule: builds the network from config, owns loss, metrics and optimizer wiring."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from fgzoom.errors import ConfigError, NonFiniteLossError
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.learned_box import ranking_loss
from fgzoom.models.optim import apply_lr_scale
from fgzoom.models.plain import PlainNet
from fgzoom.models.zoom import ZoomConfig, ZoomNet
from fgzoom.ops.boxes import box_iou
from fgzoom.seeding import run_seed, seed_step

log = logging.getLogger(__name__)

LOSS_KEYS = ("raw", "zoom", "attention", "drop", "center", "rank")
DEFAULT_LOSS = {"raw": 1.0, "zoom": 1.0, "attention": 1.0, "drop": 0.0, "center": 0.0, "rank": 1.0}
SPLITS = ("train", "val", "test")


def build_network(backbone: dict, zoom: dict | None, num_classes: int, input_size: int | None = None) -> nn.Module:
    """``model.backbone`` + ``model.zoom`` (None = the plain baseline) + ``model.input_size`` -> network."""
    backbone_cfg = BackboneConfig(**backbone)
    if zoom is None:
        return PlainNet(backbone_cfg, num_classes, input_size)
    return ZoomNet(backbone_cfg, ZoomConfig.from_dict(zoom), num_classes, input_size)


class FGVCModule(L.LightningModule):
    """Fine-grained classifier: the plain baseline (``zoom=None``) or the attention-crop zoom model.

    Logged per split (``train/``, ``val/``, ``test/``): ``loss``, ``acc`` (the final prediction, fused
    for zoom), ``acc_top5``, ``acc_macro`` (per-class mean), and for zoom ``acc_raw``, ``acc_zoom``,
    ``degenerate_frac`` and, where ground-truth boxes exist, ``iou_mean`` and ``loc_acc@0.5``.

    Args:
        backbone: ``model.backbone`` keys (see BackboneConfig).
        num_classes: from the datamodule.
        class_names: from the datamodule; stored in the checkpoint so predict needs no dataset.
        zoom: ``model.zoom`` keys (see ZoomConfig), or None for the plain model.
        loss: weights of the loss terms raw, zoom (for k > 1 regions: cross-entropy of every view), attention
            (BAP auxiliary), drop (attention-drop branch), center (center loss on part features), rank
            (ranking loss of learned boxes, ``model.zoom.box=learned`` only).
        optimizer: partial of an optimizer factory taking the module (``fgzoom.models.optim.create_optimizer``,
            timm's ``create_optimizer_v2`` with ``lr_mult_new`` for the layers not loaded from weights).
        scheduler: partial taking (optimizer, total_steps, steps_per_epoch).
        label_smoothing: cross-entropy label smoothing.
        channels_last: run the network in channels_last memory format.
        center_momentum: EMA rate of the class centers of the center loss.
        input_size: run the backbone on the batch resized to this side (``InputView``); with zoom level=image
            the zoomed view is still cropped from the batch as loaded. None = the batch as loaded.
        compile: ``torch.compile`` the backbone when the Trainer sets the model up (``configure_model``);
            for zoom, both sides of the split (the crop between them stays eager). No module is wrapped,
            so ``state_dict`` keys stay the same: a checkpoint saved with ``compile=true`` loads with
            ``compile=false`` and the other way round.
    """

    def __init__(
        self,
        backbone: dict,
        num_classes: int,
        class_names: list[str] | None = None,
        zoom: dict | None = None,
        loss: dict | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        center_momentum: float = 0.05,
        compile: bool = False,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        loss = {**DEFAULT_LOSS, **(loss or {})}
        unknown = sorted(set(loss) - set(LOSS_KEYS))
        if unknown:
            raise ConfigError(f"model.loss: unknown keys {unknown}; valid: {list(LOSS_KEYS)}")
        if any(v < 0 for v in loss.values()):
            raise ConfigError(f"model.loss={loss}: weights must be >= 0")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"class_names has {len(class_names)} entries for num_classes={num_classes}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.loss_weights = loss
        self.is_zoom = zoom is not None
        self.net = build_network(backbone, zoom, num_classes, input_size)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        uses_center = self.is_zoom and loss["center"] > 0 and self.net.config.attention == "head"
        if uses_center:
            dim = self.net.attention.num_maps * self.net.split.channels
            self.register_buffer("centers", torch.zeros(num_classes, dim))
        self.metrics = nn.ModuleDict({f"{split}_": self._split_metrics(num_classes) for split in SPLITS})
        self.run_config: dict | None = None  # set by the entry point; saved in checkpoints
        self._compiled = False
        self._total_steps = 1  # optimizer updates of the fit; set in on_train_start

    def configure_model(self) -> None:
        """Lightning calls this before each fit/validate/test/predict; compiles once when ``compile=True``."""
        if self.hparams.compile and not self._compiled:
            # static shapes: one graph per input shape (a smaller last batch adds one); a symbolic batch size
            # fails to compile on the CPU (inductor, torch 2.14, resnet10t)
            self.net.compile_backbone(dynamic=False)
            self._compiled = True

    def _split_metrics(self, num_classes: int) -> nn.ModuleDict:
        top5 = min(5, num_classes)
        metrics = {
            "acc": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc_top5": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
            "acc_macro": MulticlassAccuracy(num_classes, top_k=1, average="macro"),
        }
        if self.is_zoom:
            metrics["acc_raw"] = MulticlassAccuracy(num_classes, top_k=1, average="micro")
            metrics["acc_zoom"] = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        return nn.ModuleDict(
            {
                "acc": MetricCollection({k: v for k, v in metrics.items()}),
                "loss": MeanMetric(),
                "degenerate_frac": MeanMetric(),
                "iou_mean": MeanMetric(),
                "loc_acc": MeanMetric(),  # logged as loc_acc@0.5
            }
        )

    # ------------------------------------------------------------------ forward / loss
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def _loss(self, out: dict[str, Tensor], labels: Tensor) -> Tensor:
        w, ls = self.loss_weights, self.hparams.label_smoothing
        if not self.is_zoom:
            return F.cross_entropy(out["logits"], labels, label_smoothing=ls)
        loss = w["raw"] * F.cross_entropy(out["logits_raw"], labels, label_smoothing=ls)
        views = out.get("logits_views")  # [B, k, K] with k > 1 regions
        if views is None:
            loss = loss + w["zoom"] * F.cross_entropy(out["logits_zoom"], labels, label_smoothing=ls)
        else:
            view_labels = labels.repeat_interleave(views.shape[1])
            loss = loss + w["zoom"] * F.cross_entropy(views.flatten(0, 1), view_labels, label_smoothing=ls)
        if self.net.config.box == "learned" and w["rank"] > 0:
            zoom = out["logits_zoom"] if views is None else views
            loss = loss + w["rank"] * ranking_loss(out["logits_raw"], zoom, labels, self.net.config.rank_margin)
        if "logits_attention" in out and w["attention"] > 0:
            loss = loss + w["attention"] * F.cross_entropy(out["logits_attention"], labels, label_smoothing=ls)
        if "logits_drop" in out:
            loss = loss + w["drop"] * F.cross_entropy(out["logits_drop"], labels, label_smoothing=ls)
        if hasattr(self, "centers") and "part_features" in out:
            features = out["part_features"].float()
            centers = self.centers[labels]
            loss = loss + w["center"] * (features - centers).pow(2).sum(dim=1).mean()
            if self.training:
                with torch.no_grad():
                    self.centers.index_add_(0, labels, self.hparams.center_momentum * (features - centers))
        return loss

    def _step(self, batch: dict, split: str) -> Tensor:
        images, labels = batch["image"], batch["label"]
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        drop = split == "train" and self.is_zoom and self.loss_weights["drop"] > 0
        out = self.net(images, drop=drop) if self.is_zoom else self.net(images)
        loss = self._loss(out, labels)
        m = self.metrics[f"{split}_"]  # ModuleDict keys cannot be "train"
        m["loss"].update(loss.detach(), images.shape[0])
        for name, metric in m["acc"].items():
            source = {"acc_raw": "logits_raw", "acc_zoom": "logits_zoom"}.get(name, "logits")
            metric.update(out[source].detach(), labels)
        if self.is_zoom:
            m["degenerate_frac"].update(out["degenerate"].float())
            if split != "train" and "has_box" in batch:
                self._update_localization(m, out["boxes_image"], batch["box"], batch["has_box"])
        return loss

    @staticmethod
    def _update_localization(m: nn.ModuleDict, boxes: Tensor, gt: Tensor, has_box: Tensor) -> None:
        if boxes.ndim == 3:  # k regions: the most salient one is scored against the single GT box
            boxes = boxes[:, 0]
        iou = box_iou(boxes.float(), gt.float()).float()
        weight = has_box.float()
        m["iou_mean"].update(iou, weight)
        m["loc_acc"].update((iou >= 0.5).float(), weight)

    def _log_epoch(self, split: str) -> None:
        m = self.metrics[f"{split}_"]  # ModuleDict keys cannot be "train"
        if m["loss"].update_count == 0:  # e.g. the epoch-end hook Lightning replays after a resume
            return
        values = {f"{split}/{k}": v for k, v in m["acc"].compute().items()}
        values[f"{split}/loss"] = m["loss"].compute()
        if self.is_zoom:
            values[f"{split}/degenerate_frac"] = m["degenerate_frac"].compute()
            if m["iou_mean"].weight > 0:
                values[f"{split}/iou_mean"] = m["iou_mean"].compute()
                values[f"{split}/loc_acc@0.5"] = m["loc_acc"].compute()
        # torchmetrics' compute() has already reduced over DDP ranks; sync_dist=True averages equal
        # numbers (a no-op) and tells Lightning these epoch values are global
        self.log(f"{split}/acc", values.pop(f"{split}/acc"), prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)
        for metric in m.values():
            metric.reset()

    def on_train_start(self) -> None:
        self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))  # once, not per step

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if self.is_zoom:  # training progress drives the box warm-up (model.zoom.box_warmup)
            self.net.progress = min(1.0, self.global_step / self._total_steps)
        seed = run_seed()
        if seed is not None:  # model-side randomness replays exactly after a resume
            seed_step(seed, self.global_rank, self.current_epoch, batch_idx)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):  # one host read per step; stops before the optimizer applies it
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at epoch {self.current_epoch}, batch {batch_idx} (global step "
                f"{self.global_step}); stopped without saving, checkpoints/last.ckpt is the last good state. "
                "Lower model.optimizer.lr, set trainer.gradient_clip_val, or use trainer.precision=32-true"
            )
        self.log("train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ConfigError("model.optimizer is not set; see configs/model/zoom.yaml")
        optimizer = self.optimizer_factory(self)
        if self.scheduler_factory is None:
            apply_lr_scale(optimizer)  # the new layers' lr_mult_new; a timm scheduler applies it at each update
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        scheduler = self.scheduler_factory(optimizer, total_steps=total, steps_per_epoch=per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        scheduler.step_update(num_updates=self.global_step)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fgzoom"] = {"class_names": self.hparams.class_names, "config": self.run_config}
        if self.is_zoom:  # the box warm-up state the checkpoint's boxes were made with
            checkpoint["fgzoom"]["progress"] = float(self.net.progress)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.is_zoom:
            self.net.progress = float(checkpoint.get("fgzoom", {}).get("progress", 1.0))
