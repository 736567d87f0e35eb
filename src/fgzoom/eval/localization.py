"""Localization quality of zoom boxes against ground-truth boxes (the same numbers FGVCModule logs)."""

from __future__ import annotations

from torch import Tensor

from fgzoom.ops.boxes import box_iou


def localization_metrics(
    boxes: Tensor, gt_boxes: Tensor, has_box: Tensor, iou_threshold: float = 0.5
) -> dict[str, float]:
    """Mean IoU and the share of boxes with IoU >= ``iou_threshold``, over samples with a GT box.

    With k regions per sample (``model.zoom.num_regions`` > 1) only region 0, the most salient one, is
    scored against the single ground-truth box, as ``FGVCModule`` does.

    Args:
        boxes: Tensor[N, 4] or Tensor[N, k, 4] predicted boxes ``(y0, x0, y1, x1)`` in input pixels: int64
            end-exclusive cells (``sampler=slice``) or continuous float edges (``sampler=affine``, may be
            fractional); both mean the same region for the same numbers.
        gt_boxes: Tensor[N, 4] ground-truth boxes, same convention and grid.
        has_box: Tensor[N] bool, True where the ground-truth box is a real annotation.
        iou_threshold: IoU at which a box counts as a correct localization.

    Returns:
        ``{"iou_mean": float, "loc_acc@<t>": float}`` (``<t>`` formatted with ``:g``, e.g. ``loc_acc@0.5``),
        or ``{}`` when no sample has a ground-truth box.
    """
    if boxes.ndim == 3 and boxes.shape[1] >= 1:
        boxes = boxes[:, 0]  # k regions: the most salient one
    if boxes.shape != gt_boxes.shape or boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(
            f"boxes {tuple(boxes.shape)} and gt_boxes {tuple(gt_boxes.shape)}: need [N, 4] or [N, k, 4] "
            "boxes and [N, 4] ground truth"
        )
    if has_box.shape != boxes.shape[:1]:
        raise ValueError(f"has_box {tuple(has_box.shape)}: need [{boxes.shape[0]}]")
    keep = has_box.bool()
    if not bool(keep.any()):
        return {}
    iou = box_iou(boxes[keep].float(), gt_boxes[keep].float())  # [n]
    return {
        "iou_mean": float(iou.mean()),
        f"loc_acc@{iou_threshold:g}": float((iou >= iou_threshold).double().mean()),
    }
