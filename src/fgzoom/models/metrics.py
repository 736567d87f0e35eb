"""The metrics of one split, updated from the network's outputs and named as they are logged."""

from __future__ import annotations

from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from fgzoom.models.box_accuracy import MaxBoxAccV2
from fgzoom.ops.boxes import matched_box_iou


class SplitMetrics(nn.Module):
    """``<split>/acc`` (the prediction), ``acc_top5``, ``acc_macro`` (per-class mean), ``loss``; one accuracy
    per network branch (``FGVCNet.branches``, e.g. ``acc_zoom``); for networks that return boxes
    ``degenerate_frac`` and, where the batch has ground-truth boxes, ``iou_mean``, ``loc_acc@0.5`` and the
    box-centre error: ``box_dy`` and ``box_dx``, the mean signed offset of the predicted box's centre from the
    ground-truth box's in pixels of the network input (where ``boxes_image`` and the batch's ``box`` live;
    positive: the box lies below / right of the object), and ``box_center_err``, the mean distance between the
    two centres. With k regions all of them score region 1 (the most salient) against the single ground-truth box.

    With ``box_accuracy``, for networks that return an ``attention`` map and batches with ground-truth boxes:
    ``maxboxacc_v2`` (MaxBoxAccV2, :class:`~fgzoom.models.box_accuracy.MaxBoxAccV2`: the mean over IoU 0.3, 0.5
    and 0.7 of the box accuracy at the best map threshold of this split), ``maxboxacc@0.3``, ``@0.5``, ``@0.7``,
    and, when :meth:`compute` is given thresholds chosen elsewhere (validation's, for test), ``boxacc_v2@val_tau``
    (the box accuracy at those thresholds, mean over the three IoUs). After :meth:`compute`, :attr:`best_tau`
    holds this split's best thresholds.

    Args:
        split: ``train``, ``val`` or ``test``: the prefix of every name.
        num_classes: K.
        branches: metric name -> output key, each a top-1 accuracy.
        box_accuracy: also score MaxBoxAccV2 (about a hundred connected-component labellings per image: for
            val and test, not train).
    """

    def __init__(self, split: str, num_classes: int, branches: dict[str, str], box_accuracy: bool = False) -> None:
        super().__init__()
        self.prefix = f"{split}/"
        top1 = dict(num_classes=num_classes, top_k=1, average="micro")
        # compute_groups=False: MetricCollection.update merges metrics whose states match after the first batch
        # into one state, so acc_top5 would report acc_macro's top-1 state from then on.
        self.prediction = MetricCollection(
            {
                "acc": MulticlassAccuracy(**top1),
                "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
                "acc_macro": MulticlassAccuracy(num_classes, top_k=1, average="macro"),
            },
            prefix=self.prefix,
            compute_groups=False,
        )
        self.branch_outputs = dict(branches)
        self.branches = MetricCollection(
            {name: MulticlassAccuracy(**top1) for name in branches}, prefix=self.prefix, compute_groups=False
        )
        self.loss = MeanMetric()
        self.degenerate_frac = MeanMetric()
        self.iou_mean = MeanMetric()
        self.loc_acc = MeanMetric()  # logged as loc_acc@0.5
        self.box_dy = MeanMetric()  # signed box-centre error, image pixels
        self.box_dx = MeanMetric()
        self.box_center_err = MeanMetric()
        self.box_accuracy = MaxBoxAccV2() if box_accuracy else None
        self.best_tau: Tensor | None = None  # Tensor[D]: the best map threshold per IoU delta of the last compute

    @property
    def empty(self) -> bool:
        """No batch since the last reset (e.g. the epoch-end hook Lightning replays after a resume)."""
        return self.loss.update_count == 0

    def update(self, out: dict[str, Tensor], labels: Tensor, loss: Tensor, batch: dict | None = None,
               grid: tuple[int, int] | None = None, offset: tuple[float, float] = (0.0, 0.0)) -> None:
        """One batch: the network's outputs, labels Tensor[B], the batch loss and (for localization) the batch
        with ``box`` Tensor[B, 4] and ``has_box`` Tensor[B] when the dataset has boxes. ``grid``: the image grid
        ``(H, W)`` the boxes are on, for MaxBoxAccV2; None = that of ``batch["image"]``. ``offset``: where the
        attention's cells sit in the image (the zoom network's ``offset``)."""
        self.loss.update(loss.detach(), labels.shape[0])
        self.prediction.update(out["logits"].detach(), labels)
        for name, key in self.branch_outputs.items():
            self.branches[name].update(out[key].detach(), labels)
        if "degenerate" in out:
            self.degenerate_frac.update(out["degenerate"].float())
        if "boxes_image" in out and batch is not None and "has_box" in batch:
            boxes = out["boxes_image"]
            if boxes.ndim == 3:  # k regions: the most salient one is scored against the single GT box
                boxes = boxes[:, 0]
            boxes, truth = boxes.detach().float(), batch["box"].float()
            iou = matched_box_iou(boxes, truth).float()
            weight = batch["has_box"].float()
            self.iou_mean.update(iou, weight)
            self.loc_acc.update((iou >= 0.5).float(), weight)
            # centres ((y0 + y1) / 2, (x0 + x1) / 2): the same for integer end-exclusive and float boxes
            shift = (boxes[:, :2] + boxes[:, 2:] - truth[:, :2] - truth[:, 2:]) / 2  # [B, 2] (y, x)
            self.box_dy.update(shift[:, 0], weight)
            self.box_dx.update(shift[:, 1], weight)
            self.box_center_err.update(shift.norm(dim=1), weight)
        if self.box_accuracy is not None and "attention" in out and batch is not None and "has_box" in batch:
            if grid is None:
                if "image" not in batch:
                    raise ValueError("SplitMetrics.update: MaxBoxAccV2 needs the image grid: pass grid=(H, W) or a "
                                     "batch with its image")
                grid = tuple(batch["image"].shape[-2:])
            self.box_accuracy.update(out["attention"].detach(), batch["box"], grid, batch["has_box"], offset)

    def compute(self, val_tau: Tensor | None = None) -> dict[str, Tensor]:
        """Every metric with data, by its logged name. ``val_tau``: Tensor[3], map thresholds chosen on another
        split (one per IoU delta) at which ``boxacc_v2@val_tau`` is read; None = not logged."""
        values = {**self.prediction.compute(), **(self.branches.compute() if self.branch_outputs else {})}
        values[f"{self.prefix}loss"] = self.loss.compute()
        if self.degenerate_frac.update_count:
            values[f"{self.prefix}degenerate_frac"] = self.degenerate_frac.compute()
        if self.iou_mean.weight > 0:
            values[f"{self.prefix}iou_mean"] = self.iou_mean.compute()
            values[f"{self.prefix}loc_acc@0.5"] = self.loc_acc.compute()
            values[f"{self.prefix}box_dy"] = self.box_dy.compute()
            values[f"{self.prefix}box_dx"] = self.box_dx.compute()
            values[f"{self.prefix}box_center_err"] = self.box_center_err.compute()
        self.best_tau = None
        if self.box_accuracy is not None and self.box_accuracy.update_count:
            values.update(self._box_accuracy(val_tau))
        return values

    def _box_accuracy(self, val_tau: Tensor | None) -> dict[str, Tensor]:
        """MaxBoxAccV2 and its parts by logged name, and :attr:`best_tau`; nothing when no image had a box."""
        metric = self.box_accuracy
        table = metric.compute()  # [T, D], reduced over processes
        if bool(table.isnan().any()):  # one host read per epoch: no image with a box
            return {}
        best, self.best_tau = metric.best(table)
        values = {f"{self.prefix}maxboxacc_v2": best.mean()}
        for delta, acc in zip(metric.deltas, best.unbind(0), strict=True):
            values[f"{self.prefix}maxboxacc@{delta:g}"] = acc
        if val_tau is not None:
            values[f"{self.prefix}boxacc_v2@val_tau"] = metric.at(table, val_tau).mean()
        return values

    def reset(self) -> None:
        for metric in (self.prediction, self.branches, self.loss, self.degenerate_frac, self.iou_mean, self.loc_acc,
                       self.box_dy, self.box_dx, self.box_center_err):
            metric.reset()
        if self.box_accuracy is not None:
            self.box_accuracy.reset()
