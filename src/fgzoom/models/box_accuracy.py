"""MaxBoxAccV2, the weakly-supervised object localization metric of Choe et al., "Evaluating Weakly Supervised
Object Localization Methods Right" (CVPR 2020; reference code clovaai/wsolevaluation, ``BoxEvaluator``).

Per image, the attention map is resized bilinearly to the image grid (``resize_attention``) and min-max
normalized (``normalize_attention``: resizing first and normalizing after is what the zoom boxes do, and a
constant map counts as the whole frame). At each threshold ``tau`` of the grid ``0, 1/T, ..., (T-1)/T``
(wsolevaluation: ``np.arange(0, 1, 0.01)``, T = 100) the map is binarized (``norm > tau``, strict as
``cv2.THRESH_BINARY``); every 8-connected foreground component gives a candidate box (its bounding box, as
``cv2.findContours``' outer contours do; holes give none: RETR_TREE would add each hole's own box as a further
candidate). An image is correct at (tau, delta) when its best candidate reaches IoU >= delta with the GT box.

    BoxAcc(tau, delta) = weighted share of correct images
    MaxBoxAcc(delta)   = max over tau of BoxAcc(tau, delta)
    MaxBoxAccV2        = mean of MaxBoxAcc(delta) over delta in {0.3, 0.5, 0.7}

Differences from wsolevaluation, all deliberate: the map is not quantized to 8 bits before thresholding; boxes
are end-exclusive ``(y0, x0, y1, x1)`` (:mod:`fgzoom.ops.boxes`) instead of its inclusive ones clipped to
``W - 1``; one GT box per image; grids above ``max_side`` are evaluated downscaled (below).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor
from torchmetrics import Metric

from fgzoom.ops.attention_boxes import normalize_attention, resize_attention
from fgzoom.ops.box_checks import check_boxes, check_grid, check_maps, describe
from fgzoom.ops.boxes import scale_float_boxes
from fgzoom.ops.components import BACKENDS, best_component_iou

IOU_DELTAS = (0.3, 0.5, 0.7)  # MaxBoxAccV2's IoU thresholds


class MaxBoxAccV2(Metric):
    """BoxAcc over a grid of map thresholds and IoU thresholds, accumulated over batches.

    ``compute()`` returns the table ``Tensor[T, D]`` of BoxAcc(tau_t, delta_d); :meth:`best` reads MaxBoxAcc and
    its threshold from it, :meth:`at` the accuracy at given thresholds (e.g. the ones chosen on validation).
    State: ``correct`` ``Tensor[T, D]`` (weighted counts of correct images) and ``total`` (weighted count of
    images), both summed over processes.

    Args:
        num_thresholds: T, the thresholds ``t / T`` for ``t = 0 .. T - 1`` (100: steps of 0.01).
        deltas: the IoU thresholds, numbers in (0, 1].
        max_side: evaluate a grid whose long side exceeds this on a grid scaled down to it (the map resized to
            that grid, the GT box scaled by the same factors); None = always the image grid. 224 is the
            resolution wsolevaluation scores at; grids up to it are scored exactly.
        chunk_cells: (image, threshold) masks are labelled in chunks of about this many cells, which bounds the
            memory (about 100 bytes per cell with the torch backend, 5 with scipy).
        backend: connected components by ``best_component_iou``: auto (scipy on the CPU, torch elsewhere), torch
            or scipy.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_thresholds: int = 100,
        deltas: tuple[float, ...] = IOU_DELTAS,
        max_side: int | None = 224,
        chunk_cells: int = 2**22,
        backend: str = "auto",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("num_thresholds", num_thresholds), ("chunk_cells", chunk_cells)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an int >= 1")
        if max_side is not None and (not isinstance(max_side, numbers.Integral) or isinstance(max_side, bool)
                                     or max_side < 1):
            raise ValueError(f"max_side={max_side!r}: must be an int >= 1 or None (the image grid)")
        deltas = tuple(deltas)
        if not deltas or not all(isinstance(d, numbers.Real) and not isinstance(d, bool) and 0 < d <= 1
                                 for d in deltas):
            raise ValueError(f"deltas={deltas!r}: must be one or more IoU thresholds in (0, 1]")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: must be one of {BACKENDS}")
        self.num_thresholds = int(num_thresholds)
        self.deltas = tuple(float(d) for d in deltas)
        self.max_side = None if max_side is None else int(max_side)
        self.chunk_cells = int(chunk_cells)
        self.backend = backend
        self.add_state("correct", torch.zeros(self.num_thresholds, len(self.deltas)), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(()), dist_reduce_fx="sum")

    def thresholds(self, device: torch.device | str | None = None) -> Tensor:
        """The map thresholds ``Tensor[T]`` float32: ``t / T`` for ``t = 0 .. T - 1``."""
        return (torch.arange(self.num_thresholds, dtype=torch.float64, device=device) / self.num_thresholds).float()

    def eval_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        """The grid an ``(H, W)`` image grid is scored on: itself, or scaled so its long side is ``max_side``."""
        h, w = check_grid(grid, "grid")
        if self.max_side is None or max(h, w) <= self.max_side:
            return h, w
        scale = self.max_side / max(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def update(self, attention: Tensor, boxes: Tensor, grid: tuple[int, int], weight: Tensor | None = None,
               offset: tuple[float, float] = (0.0, 0.0)) -> None:
        """One batch.

        Args:
            attention: ``Tensor[B, h, w]`` floating, one map per image (e.g. the mean of the M maps), any range.
            boxes: ``Tensor[B, 4]`` GT ``(y0, x0, y1, x1)`` on ``grid`` (image pixels, end-exclusive).
            grid: ``(H, W)`` the image grid.
            weight: ``Tensor[B]`` (e.g. ``has_box``; bool or float), or None for all ones. A batch without
                weight is skipped after one host read, so datasets without boxes pay nothing.
            offset: where the map's cells sit in the image (the network's cell offset,
                ``fgzoom.ops.cell_geometry``), in cells.
        """
        check_maps(attention, "attention")
        check_boxes(boxes, "boxes")
        b = attention.shape[0]
        if boxes.shape[0] != b:
            raise ValueError(f"boxes={describe(boxes)}: must hold one box per map ({b})")
        if weight is not None and (not isinstance(weight, Tensor) or weight.shape != (b,)):
            raise ValueError(f"weight={describe(weight)}: must be a Tensor[B] with B={b}, or None")
        grid = check_grid(grid, "grid")
        device = attention.device
        weight = torch.ones(b, device=device) if weight is None else weight.to(device=device, dtype=torch.float32)
        if not bool((weight > 0).any()):  # host read: skip the labelling (the counts would not move)
            return
        on = self.eval_grid(grid)
        boxes = scale_float_boxes(boxes.to(device), grid, on) if on != grid else boxes.to(device).float()
        norm, _ = normalize_attention(resize_attention(attention.float(), on, offset))  # [B, H, W] in [0, 1]
        taus = self.thresholds(device)
        count = b * self.num_thresholds  # (image, threshold) pairs, image-major
        step = max(1, self.chunk_cells // (on[0] * on[1]))
        best = []
        for start in range(0, count, step):  # chunks bound the memory; not a loop over images or thresholds
            pair = torch.arange(start, min(start + step, count), device=device)
            image, level = pair // self.num_thresholds, pair % self.num_thresholds
            masks = norm[image] > taus[level][:, None, None]  # [P, H, W]
            best.append(best_component_iou(masks, boxes[image], self.backend))
        iou = torch.cat(best).view(b, self.num_thresholds)  # [B, T] float64
        deltas = torch.tensor(self.deltas, dtype=torch.float64, device=device)
        hits = (iou[:, :, None] >= deltas).float()  # [B, T, D]
        self.correct += (hits * weight[:, None, None]).sum(dim=0)
        self.total += weight.sum()

    def compute(self) -> Tensor:
        """``Tensor[T, D]`` float32: BoxAcc(tau_t, delta_d); NaN when no image had weight."""
        return self.correct / self.total

    def best(self, table: Tensor) -> tuple[Tensor, Tensor]:
        """MaxBoxAcc per delta ``Tensor[D]`` and the threshold reaching it ``Tensor[D]`` (the lowest on a tie, as
        ``np.argmax``), from ``table`` ``Tensor[T, D]`` (``compute()``)."""
        index = table.argmax(dim=0)  # [D]
        return table.gather(0, index[None])[0], self.thresholds(table.device)[index]

    def at(self, table: Tensor, tau: Tensor) -> Tensor:
        """BoxAcc per delta ``Tensor[D]`` at thresholds ``tau`` ``Tensor[D]`` (one per delta; each read at the
        nearest threshold of the grid), from ``table`` ``Tensor[T, D]``."""
        index = (tau.to(table.device).double() * self.num_thresholds).round().long().clamp(0, self.num_thresholds - 1)
        return table.gather(0, index[None])[0]
