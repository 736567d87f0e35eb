"""What eval and predict keep of ``trainer.predict``: the per-batch outputs of ``FGVCModule.predict_step``
gathered into per-sample tensors, the test-time-augmentation views, and the CSV cells of zoom boxes.

Zoom boxes come in the model's own form: Tensor[N, 4] for one region, Tensor[N, k, 4] for
``model.zoom.num_regions`` = k > 1 (most salient first); int64 cells for ``sampler=slice``, continuous
float32 for ``sampler=continuous`` and ``grid_sample``. :func:`box_header` / :func:`box_cells` write them to CSV
(eval: on the network input); :meth:`Predictions.boxes_on_files` maps them onto the image files and
:func:`box_columns` makes predict's columns of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import lightning as L
import torch
from torch import Tensor, nn

from fgzoom.errors import ConfigError
from fgzoom.ops.boxes import boxes_to_source

THRESHOLD_RULES = ("threshold", "moments")  # the box rules that read model.zoom.threshold


@dataclass
class Predictions:
    """Per-sample outputs of one ``trainer.predict`` pass, in loader order (N samples, K classes).

    Attributes:
        index: Tensor[N] int64, position of each sample in its dataset.
        probs: Tensor[N, K] float32 probabilities of the prediction (fused for the zoom model).
        probs_tta: Tensor[N, K] float32 mean probabilities over the TTA views, or None.
        labels: Tensor[N] int64, or None when the loader has no labels (predict).
        boxes: zoom boxes ``(y0, x0, y1, x1)`` in input pixels, or None (a network without boxes):
            Tensor[N, 4] (k = 1) or Tensor[N, k, 4] (k regions, most salient first); int64 end-exclusive
            cells for ``sampler=slice``, float32 continuous edges (may be fractional) for the other samplers.
        file_size: Tensor[N, 2] int64 ``(H, W)`` of each image file, or None (a loader without it).
        file_to_input: Tensor[N, 4] float32 ``(sy, ty, sx, tx)``, where the eval transform put each file's pixels
            (``FGVCDataset(file_geometry=True)``), or None.
    """

    index: Tensor
    probs: Tensor
    probs_tta: Tensor | None = None
    labels: Tensor | None = None
    boxes: Tensor | None = None
    file_size: Tensor | None = None
    file_to_input: Tensor | None = None

    def boxes_on_files(self) -> Tensor | None:
        """:attr:`boxes` on the image files: float32 ``(y0, x0, y1, x1)`` in each file's own pixels, inside
        it (the eval transform's resize and centre crop undone, :func:`fgzoom.ops.boxes.boxes_to_source`),
        the shape of :attr:`boxes`. None without boxes.

        Raises:
            ValueError: boxes but no file geometry (a loader not built with ``file_geometry=True``).
        """
        if self.boxes is None:
            return None
        if self.file_to_input is None or self.file_size is None:
            raise ValueError("Predictions.boxes_on_files: the loader gave no file_size/file_to_input; build its "
                             "dataset with FGVCDataset(..., file_geometry=True)")
        return boxes_to_source(self.boxes, self.file_to_input, self.file_size)


def gather_predictions(outputs: Sequence[Mapping[str, Tensor]]) -> Predictions:
    """Concatenate the per-batch outputs of ``FGVCModule.predict_step`` (as ``trainer.predict`` returns them)
    on the CPU. A batch without ``index`` counts its samples in loader order."""
    if not outputs:
        raise ConfigError("the loader yielded no samples: nothing to evaluate")

    def cat(key: str) -> Tensor | None:
        if key not in outputs[0]:
            return None
        return torch.cat([out[key].detach().cpu() for out in outputs])

    probs = cat("probs")
    index = cat("index")
    if index is None:
        index = torch.arange(probs.shape[0])
    return Predictions(index=index, probs=probs, probs_tta=cat("probs_tta"), labels=cat("label"),
                       boxes=cat("boxes_image"), file_size=cat("file_size"), file_to_input=cat("file_to_input"))


def check_one_device(trainer: L.Trainer, entry: str) -> None:
    """Eval and predict keep every sample's outputs in one process: refuse a trainer that splits the data
    over processes (``entry`` names the caller in the message)."""
    if trainer.world_size > 1:
        raise ConfigError(
            f"{entry} runs on one device ({trainer.world_size} processes requested): pass trainer.devices=1 "
            "(e.g. trainer=cpu or trainer=gpu)"
        )


def tta_views(
    model: nn.Module, hflip: bool, thresholds: Sequence[float] | None
) -> list[tuple[bool, float | None]]:
    """The (flip, threshold) views of test-time augmentation for ``model`` (for ``FGVCModule.set_tta``).

    Thresholds apply only to a zoom model with ``box=threshold`` or ``moments`` (the other rules and learned
    boxes do not read ``model.zoom.threshold``, so they get hflip views only; None = the trained threshold);
    each must be in [0, 1). Every view works with every zoom option (sampler, number of regions): TTA averages
    the fused probabilities only, never boxes.
    """
    config = getattr(getattr(model, "net", model), "config", None)
    levels: list[float | None] = [None]
    if thresholds and getattr(config, "box", None) in THRESHOLD_RULES:
        for t in thresholds:
            if not 0.0 <= float(t) < 1.0:
                raise ConfigError(f"eval.tta_thresholds={list(thresholds)}: each threshold must be in [0, 1)")
        levels = [float(t) for t in thresholds]
    flips = [False, True] if hflip else [False]
    return [(flip, t) for flip in flips for t in levels]


def view_name(flip: bool, threshold: float | None) -> str:
    """``hflip+thr0.3``, ``thr0.5``, ``hflip`` or ``identity``: a TTA view for the log."""
    parts = (["hflip"] if flip else []) + ([f"thr{threshold:g}"] if threshold is not None else [])
    return "+".join(parts) or "identity"


COORDS = ("y0", "x0", "y1", "x1")


def box_header(boxes: Tensor | None, prefix: str = "box") -> list[str]:
    """CSV column names for zoom boxes Tensor[N, 4] or Tensor[N, k, 4]: ``box1_y0, box1_x0, box1_y1, box1_x1``
    then ``box2_*`` ... ``box<k>_*`` (region 1 = the most salient, the one localization scores); ``prefix``
    replaces ``box`` (for other boxes of a sample). [] for None."""
    if boxes is None:
        return []
    k = 1 if boxes.ndim == 2 else int(boxes.shape[1])
    return [f"{prefix}{r}_{c}" for r in range(1, k + 1) for c in COORDS]


def box_cells(boxes: Tensor | None, row: int, decimals: int = 2) -> list[str]:
    """The cells of :func:`box_header` for sample ``row``: integers as they are (``sampler=slice``), float
    boxes (``continuous``, ``grid_sample``) with ``decimals`` decimals. [] for None."""
    if boxes is None:
        return []
    values = boxes[row].reshape(-1)
    if values.is_floating_point():
        return [f"{v:.{decimals}f}" for v in values.tolist()]
    return [str(int(v)) for v in values.tolist()]


class CsvColumns(NamedTuple):
    """A group of per-image CSV columns: ``names`` and ``values`` Tensor[N, ...] (``len(names)`` numbers per row,
    in that order), written with ``decimals`` decimals (:func:`box_cells`)."""

    names: list[str]
    values: Tensor
    decimals: int = 2


def box_columns(preds: Predictions) -> list[CsvColumns]:
    """The box columns of ``predictions.csv``: each image's zoom boxes on its file
    (:meth:`Predictions.boxes_on_files`), ``box1_y0, box1_x0, box1_y1, box1_x1`` .. ``box<k>_*`` in file pixels,
    2 decimals; [] for a network without boxes. Other boxes of a network output (e.g. ranked candidates, with
    their scores as a group of their own) become one more group here, once ``predict_step`` and
    :func:`gather_predictions` pass them on."""
    on_files = preds.boxes_on_files()
    if on_files is None:
        return []
    return [CsvColumns(box_header(on_files), on_files.reshape(on_files.shape[0], -1))]
