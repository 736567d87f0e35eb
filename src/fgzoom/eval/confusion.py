"""Confusion matrix and per-class accuracy: torchmetrics computes (``MulticlassConfusionMatrix``,
``MulticlassAccuracy``), these write CSV and a PNG that stays readable at a few hundred classes (no cell text
above ``ANNOTATE_MAX`` classes, thinned small tick labels, row-normalized colours with a colorbar)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

ANNOTATE_MAX = 30  # write the value in each cell up to this many classes
MAX_TICKS = 50  # tick labels per axis at most; every k-th class above that


def confusion_matrix(probs: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Counts Tensor[K, K] int64: row = true class, column = predicted class (argmax of ``probs`` [N, K])."""
    metric = MulticlassConfusionMatrix(num_classes=num_classes, normalize="none")
    return metric(probs, labels).long()


def per_class_accuracy(probs: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Samples per class Tensor[K] int64 and top-1 accuracy per class Tensor[K] float64 (torchmetrics'
    ``MulticlassAccuracy(average="none")``; NaN for a class without samples) of ``probs`` [N, K] against
    ``labels`` [N]."""
    n = torch.bincount(labels, minlength=num_classes)
    acc = MulticlassAccuracy(num_classes, top_k=1, average="none")(probs, labels).double()
    return n, acc.masked_fill(n == 0, math.nan)


def write_confusion_csv(path: Path, matrix: Tensor, class_names: Sequence[str]) -> None:
    """Counts with class names as header (predicted) and first column (true)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true\\predicted", *class_names])
        for name, row in zip(class_names, matrix.tolist(), strict=True):
            writer.writerow([name, *row])


def write_per_class_csv(path: Path, probs: Tensor, labels: Tensor, class_names: Sequence[str]) -> None:
    """Rows ``class, n, acc`` (:func:`per_class_accuracy`; acc empty for a class with no samples)."""
    n, acc = per_class_accuracy(probs, labels, len(class_names))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "n", "acc"])
        for name, count, value in zip(class_names, n.tolist(), acc.tolist(), strict=True):
            writer.writerow([name, count, "" if math.isnan(value) else f"{value:.6f}"])


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def confusion_figure(matrix: Tensor, class_names: Sequence[str], title: str = "") -> Figure:
    """Row-normalized confusion matrix as a matplotlib Figure (no pyplot state)."""
    k = matrix.shape[0]
    rows = matrix.double().sum(dim=1, keepdim=True)
    norm = (matrix.double() / rows.clamp_min(1)).numpy()  # [K, K], rows without samples stay 0
    side = min(22.0, max(7.0, 3.0 + 0.09 * k))
    fig = Figure(figsize=(side + 1.5, side), dpi=100 if k <= 100 else 130, layout="constrained")
    ax = fig.add_subplot()
    # many classes: a square-root colour scale so that small confusions (a few %) stay visible
    scale = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0) if k > ANNOTATE_MAX else Normalize(vmin=0.0, vmax=1.0)
    image = ax.imshow(norm, cmap="Blues", norm=scale, interpolation="nearest")
    label = "share of the true class (row-normalized)" + (", sqrt colour scale" if k > ANNOTATE_MAX else "")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label=label)
    step = max(1, math.ceil(k / MAX_TICKS))
    ticks = list(range(0, k, step))
    fontsize = 8 if k <= ANNOTATE_MAX else 6
    labels = [_short(class_names[i]) for i in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels, fontsize=fontsize)
    ax.set_xlabel("predicted class" + (f" (every {step}th label shown)" if step > 1 else ""))
    ax.set_ylabel("true class")
    if k <= ANNOTATE_MAX:
        cell_font = 10 if k <= 10 else 7 if k <= 20 else 5
        counts = matrix.tolist()
        for i in range(k):
            for j in range(k):
                if counts[i][j]:
                    value = norm[i, j]
                    ax.text(
                        j,
                        i,
                        f"{value:.2f}".lstrip("0") if value < 1 else "1",
                        ha="center",
                        va="center",
                        fontsize=cell_font,
                        color="white" if value > 0.5 else "black",
                    )
    ax.set_title(title or f"confusion matrix ({k} classes)", fontsize=11)
    return fig


def write_confusion_png(path: Path, matrix: Tensor, class_names: Sequence[str], title: str = "") -> Figure:
    """Write :func:`confusion_figure` to ``path``; returns the figure (for the loggers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = confusion_figure(matrix, class_names, title)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.1)
    return fig
