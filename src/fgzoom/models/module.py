"""The LightningModule: the network from its typed config, the loss, the metrics, the optimizer wiring."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import numbers
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from torch import Tensor

from fgzoom.callbacks.ema import EMA
from fgzoom.data.seeding import run_seed, seed_step
from fgzoom.errors import ConfigError, NonFiniteLossError
from fgzoom.models.backbone import BackboneConfig
from fgzoom.models.box_accuracy import IOU_DELTAS
from fgzoom.models.branch_norm import missing_zoom_stats
from fgzoom.models.loss import FGVCLoss
from fgzoom.models.metrics import SplitMetrics
from fgzoom.models.network import FGVCNet
from fgzoom.models.optim import apply_lr_scale
from fgzoom.models.options import config_from
from fgzoom.models.plain import PlainNet
from fgzoom.models.zoom import ZoomNet
from fgzoom.models.zoom_config import ZoomConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# batch keys predict_step returns as they are: the sample's identity, label and box, and where a file's
# pixels went (FGVCDataset(file_geometry=True), for scripts/predict.py's boxes on the file)
PASSED_THROUGH = ("index", "label", "box", "has_box", "file_size", "file_to_input")
# timm.create_model arguments that load weights from somewhere; dropped from a saved model's backbone.kwargs
WEIGHT_ARGUMENTS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "pretrained_strict")


def create_network(backbone: BackboneConfig, zoom: ZoomConfig | None, num_classes: int,
                   input_size: int | None = None) -> FGVCNet:
    """``model.backbone`` + ``model.zoom`` (None: the plain baseline) + ``model.input_size`` -> the network."""
    if zoom is None:
        return PlainNet(backbone, num_classes, input_size)
    return ZoomNet(backbone, zoom, num_classes, input_size)


def box_thresholds(value: object) -> Tensor | None:
    """The ``val_box_tau`` a checkpoint or model folder holds (None, or one number in [0, 1] per IoU delta of
    MaxBoxAccV2) as Tensor[3] float32; files saved before it existed hold none."""
    if value is None:
        return None
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == len(IOU_DELTAS) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in value)
    if not ok:
        raise ConfigError(f"fgzoom.val_box_tau={value!r} in the checkpoint: must be null or {len(IOU_DELTAS)} "
                          "numbers in [0, 1] (the val-best map thresholds)")
    return torch.tensor([float(v) for v in value], dtype=torch.float32)


class FGVCModule(L.LightningModule):
    """Fine-grained classifier around any ``FGVCNet``: the plain baseline (``zoom=None``) or the zoom model.

    The network, the loss (``FGVCLoss``) and the metrics (``SplitMetrics``) all follow the network's output
    contract (``fgzoom.models.network``), so this class has no plain/zoom branches. Logged per split
    (``train/``, ``val/``, ``test/``): ``loss``, ``acc`` (the final prediction, fused for zoom), ``acc_top5``,
    ``acc_macro`` (per-class mean), and for zoom ``acc_raw``, ``acc_zoom``, ``degenerate_frac`` and, where
    ground-truth boxes exist, ``iou_mean``, ``loc_acc@0.5`` and the box-centre error in pixels (``box_dy``,
    ``box_dx`` signed, ``box_center_err``; ``SplitMetrics``); on val and test also MaxBoxAccV2 of the attention
    map (``maxboxacc_v2``, ``maxboxacc@0.3``, ``@0.5``, ``@0.7``, each at the best map threshold of its split).
    ``model=bap`` (``model.zoom.crop=false``) logs ``acc_raw`` (equal to ``acc``), no ``acc_zoom``, and its box
    metrics on val and test only (it boxes at evaluation).

    After each validation epoch (not the sanity check) the map thresholds best on val, one per IoU delta, are
    kept in :attr:`val_box_tau` and saved in checkpoints (``fgzoom.val_box_tau``) and model folders; the test
    epoch then also logs ``test/boxacc_v2@val_tau``, the box accuracy at val's thresholds (mean over the
    deltas). They are not a buffer: the EMA of the weights averages every floating buffer and swaps the average
    in for validation, which would mix thresholds of different epochs.

    Args:
        backbone: ``model.backbone`` (a ``BackboneConfig``; the config file instantiates it; a mapping of its
            keys is accepted too).
        num_classes: from the datamodule.
        class_names: from the datamodule; stored in the checkpoint so predict needs no dataset.
        zoom: ``model.zoom`` (a ``ZoomConfig`` or a mapping of its keys), or None for the plain model.
        loss: ``model.loss`` weights of the loss terms (see ``FGVCLoss``).
        optimizer: partial of an optimizer factory taking the module (``fgzoom.models.optim.create_optimizer``,
            timm's ``create_optimizer_v2`` with ``lr_mult_new`` for the layers not loaded from weights).
        scheduler: partial taking (optimizer, total_steps, steps_per_epoch).
        label_smoothing: cross-entropy label smoothing.
        channels_last: run the network in channels_last memory format.
        center_momentum: EMA rate of the class centers of the center loss.
        compile: ``torch.compile`` the backbone when the Trainer sets the model up (``configure_model``);
            for zoom, both sides of the split (the crop between them stays eager). No module is wrapped,
            so ``state_dict`` keys stay the same: a checkpoint saved with ``compile=true`` loads with
            ``compile=false`` and the other way round.
        input_size: run the backbone on the batch resized to this side (``InputView``); with zoom level=image
            the zoomed view is still cropped from the batch as loaded. None = the batch as loaded.
        ema: ``model.ema``: ``decay`` (null: off) and ``warmup`` of an exponential moving average of the
            weights (``fgzoom.callbacks.ema.EMA``, attached by :meth:`configure_callbacks`); the average replaces the raw
            weights in validation and in every checkpoint's ``state_dict``.
        grad_checkpointing: recompute the backbone's activations in backward instead of storing them (timm's
            ``set_grad_checkpointing``; for zoom, both sides of the split): less memory, about one more forward.
            BatchNorm layers see the recomputed forward too, so their running statistics move twice per step,
            as with timm's own checkpointing.
    """

    def __init__(
        self,
        backbone: BackboneConfig | Mapping,
        num_classes: int,
        class_names: list[str] | None = None,
        zoom: ZoomConfig | Mapping | None = None,
        loss: Mapping[str, float] | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        center_momentum: float = 0.05,
        compile: bool = False,
        input_size: int | None = None,
        grad_checkpointing: bool = False,
        ema: Mapping | None = None,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"class_names has {len(class_names)} entries for num_classes={num_classes}")
        backbone = config_from(BackboneConfig, backbone, "model.backbone")
        zoom = None if zoom is None else config_from(ZoomConfig, zoom, "model.zoom")
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "backbone", "zoom"], logger=False)
        # the typed configs as plain containers: a checkpoint stays loadable with torch's weights_only reader
        self.hparams.update(backbone=dataclasses.asdict(backbone), zoom=zoom and dataclasses.asdict(zoom))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.net = create_network(backbone, zoom, num_classes, input_size)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if grad_checkpointing not in (True, False):
            raise ConfigError(f"model.grad_checkpointing={grad_checkpointing!r}: must be true or false")
        if grad_checkpointing:
            self.net.set_grad_checkpointing(True)
        self.ema_options = dict(ema or {})
        self.configure_callbacks()  # a bad model.ema fails at build time, not when fit starts
        self.criterion = FGVCLoss(loss, num_classes, self.net.part_features_dim, self.net.rank_margin,
                                  label_smoothing, center_momentum, proposal_margin=self.net.proposal_margin)
        self.net.attention_drop = self.criterion.weights["drop"] > 0
        for split in SPLITS:
            # MaxBoxAccV2 on val and test only: a hundred connected-component labellings per image
            setattr(self, f"{split}_metrics",
                    SplitMetrics(split, num_classes, self.net.branches, box_accuracy=split != "train"))
        self.run_config: dict | None = None  # set by the entry point; saved in checkpoints
        self.val_box_tau: Tensor | None = None  # Tensor[3] val-best map thresholds; saved in checkpoints
        self._compiled = False
        self._total_steps = 1  # optimizer updates of the fit; set in on_train_start

    @classmethod
    def from_saved(
        cls, hyper_parameters: Mapping, state_dict: Mapping[str, Tensor], progress: float = 1.0,
        source: str = "the file", val_box_tau: Sequence[float] | None = None,
    ) -> FGVCModule:
        """Rebuild a module on the CPU from the plain values a checkpoint or model folder holds: its
        ``hyper_parameters`` (only this class's own arguments are read; nothing in them is imported or called),
        its ``state_dict``, the box warm-up ``progress`` and the val-best map thresholds ``val_box_tau`` (None:
        none). The backbone is built without pretrained weights
        (the state has them), so a model trained from ``pretrained_path`` loads where that file is absent.

        Raises:
            ConfigError: naming ``source`` when the values or the weights do not fit this class.
        """
        if not isinstance(hyper_parameters, Mapping):
            raise ConfigError(f"{source}: its hyper_parameters are not a mapping")
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "optimizer", "scheduler"}
        kwargs = {k: v for k, v in hyper_parameters.items() if k in known}
        backbone = kwargs.get("backbone")
        if isinstance(backbone, Mapping):  # the weights are the state's: nothing else is loaded, no file named
            extra = backbone.get("kwargs")
            if isinstance(extra, Mapping):
                extra = {k: v for k, v in extra.items() if k not in WEIGHT_ARGUMENTS} or None
            kwargs["backbone"] = {**backbone, "pretrained": False, "pretrained_path": None, "kwargs": extra}
        try:
            module = cls(**kwargs)
            state = dict(state_dict)
            meta = {"progress": progress, "val_box_tau": val_box_tau}
            module.on_load_checkpoint({"state_dict": state, "fgzoom": meta})
            module.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{source}: does not match the model it describes ({first})") from e
        return module

    def configure_model(self) -> None:
        """Lightning calls this before each fit/validate/test/predict; compiles once when ``compile=True``."""
        if self.hparams.compile and not self._compiled:
            # static shapes: one graph per input shape (a smaller last batch adds one); a symbolic batch size
            # fails to compile on the CPU (inductor, torch 2.14, resnet10t)
            self.net.compile_backbone(dynamic=False)
            self._compiled = True

    def configure_callbacks(self) -> list[L.Callback]:
        """The EMA of the weights when ``model.ema.decay`` is set (Lightning adds model callbacks to the
        Trainer's for every fit/validate/test/predict)."""
        options = dict(self.ema_options)
        unknown = sorted(set(options) - {"decay", "warmup"})
        if unknown:
            raise ConfigError(f"model.ema.{unknown[0]}: unknown key; valid: decay, warmup")
        if options.get("decay") is None:
            return []
        return [EMA(**options)]

    def metrics(self, split: str) -> SplitMetrics:
        """The ``SplitMetrics`` of ``split`` (train, val or test)."""
        return getattr(self, f"{split}_metrics")

    # ------------------------------------------------------------------ forward / loss
    def forward(self, images: Tensor, **options) -> dict[str, Tensor]:
        """images Tensor[B, 3, H, W] -> the network's outputs (``options`` go to its forward)."""
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images, **options)

    def _shared_step(self, batch: dict, split: str) -> Tensor:
        labels = batch["label"]
        out = self(batch["image"])
        loss = self.criterion(out, labels, batch.get("target"))  # target: the mixed labels of a mixup batch
        self.metrics(split).update(out, labels, loss, batch if split != "train" else None,
                                   offset=self.net.offset)
        return loss

    def _log_epoch(self, split: str) -> None:
        metrics = self.metrics(split)
        if metrics.empty:  # e.g. the epoch-end hook Lightning replays after a resume
            return
        values = metrics.compute(val_tau=self.val_box_tau if split == "test" else None)
        if split == "val" and metrics.best_tau is not None and not (self._trainer and self.trainer.sanity_checking):
            self.val_box_tau = metrics.best_tau.detach().clone()  # the same on every rank (reduced state)
        # torchmetrics' compute() has already reduced over DDP ranks; sync_dist=True averages equal
        # numbers (a no-op) and tells Lightning these epoch values are global
        self.log(f"{split}/acc", values.pop(f"{split}/acc"), prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)
        metrics.reset()

    def on_train_start(self) -> None:
        self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))  # once, not per step

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        self.net.progress = min(1.0, self.global_step / self._total_steps)  # drives the box warm-up
        seed = run_seed()
        if seed is not None:  # model-side randomness replays exactly after a resume
            seed_step(seed, self.global_rank, self.current_epoch, batch_idx)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
        if not torch.isfinite(loss):  # one host read per step; stops before the optimizer applies it
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at epoch {self.current_epoch}, batch {batch_idx} (global step "
                f"{self.global_step}); stopped without saving, checkpoints/last.ckpt is the last good state. "
                "Lower model.optimizer.lr, set trainer.gradient_clip_val, or use trainer.precision=32-true"
            )
        self.log("train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    # (hflip, threshold) views of test-time augmentation in predict_step; empty: none (see set_tta)
    tta: tuple[tuple[bool, float | None], ...] = ()

    def set_tta(
        self, views: tuple[tuple[bool, float | None], ...] | list[tuple[bool, float | None]] = ()
    ) -> None:
        """Test-time augmentation of :meth:`predict_step`: each view ``(hflip, threshold)`` runs the network
        on the batch (flipped left-right when ``hflip``) with ``threshold`` passed to its forward (the box
        threshold of the threshold and moments rules; None: the trained one); ``probs_tta`` is the mean of
        the views' probabilities. ``()`` turns it off."""
        self.tta = tuple((bool(flip), None if t is None else float(t)) for flip, t in views)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """One batch of ``trainer.predict``: ``image`` Tensor[B, 3, H, W] (optional ``index``, ``label``,
        ``box``, ``has_box``, ``file_size``, ``file_to_input``) -> per-sample outputs, on the batch's device:

        * ``probs`` Tensor[B, K] float32: softmax of the prediction ``logits``;
        * the network's ``logits``, ``logits_raw``, branch outputs (``net.branches``, e.g. ``logits_zoom``),
          ``boxes_image``, ``degenerate`` and ``attention`` (Tensor[B, h, w], the mean map on its own grid, for
          MaxBoxAccV2) when it returns them;
        * ``loss`` (a scalar, the training loss of the batch) when the batch has ``label``;
        * ``probs_tta`` Tensor[B, K] float32 when :meth:`set_tta` set views;
        * ``index``, ``label``, ``box``, ``has_box``, ``file_size``, ``file_to_input`` of the batch (those it has),
          passed through.
        """
        images = batch["image"]
        out = self(images)
        probs = out["logits"].float().softmax(-1)
        keys = dict.fromkeys(("logits", "logits_raw", *self.net.branches.values(), "boxes_image", "degenerate",
                              "attention"))
        result = {"probs": probs, **{key: out[key] for key in keys if key in out}}
        if "label" in batch:
            result["loss"] = self.criterion(out, batch["label"])
        if self.tta:
            total = torch.zeros_like(probs)
            for flip, threshold in self.tta:
                if not flip and threshold is None:
                    total += probs  # the view just computed
                    continue
                options = {} if threshold is None else {"threshold": threshold}
                total += self(images.flip(-1) if flip else images, **options)["logits"].float().softmax(-1)
            result["probs_tta"] = total / len(self.tta)
        result.update({key: batch[key] for key in PASSED_THROUGH if key in batch})
        return result

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
        if hasattr(scheduler, "step_update"):  # timm: set from the update count (exact on resume)
            scheduler.step_update(num_updates=self.global_step)
        else:  # torch: one step per update (its state_dict is restored on resume)
            scheduler.step()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fgzoom"] = {
            "class_names": self.hparams.class_names,
            "config": self.run_config,
            "progress": float(self.net.progress),  # the warm-up state the checkpoint's boxes were made with
            # the map thresholds best on the last validation (one host read per checkpoint)
            "val_box_tau": None if self.val_box_tau is None else [float(v) for v in self.val_box_tau.tolist()],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("fgzoom", {})
        self.net.progress = float(meta.get("progress", 1.0))
        self.val_box_tau = box_thresholds(meta.get("val_box_tau"))
        state = checkpoint.get("state_dict", {})
        if "centers" in state:  # saved before the loss became its own module
            state["criterion.centers"] = state.pop("centers")
        self.add_missing_zoom_stats(state)

    def add_missing_zoom_stats(self, state: dict) -> None:
        """A state_dict saved before the zoom pass had its own BatchNorm statistics (``model.zoom.norm_stats``):
        start them as copies of the shared ones, which is what that model was evaluated with. In place."""
        own = self.state_dict()
        for zoom_key, raw_key in missing_zoom_stats(state, lambda k: k in own).items():
            state[zoom_key] = state[raw_key].clone()
