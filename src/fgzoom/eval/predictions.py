"""Run a model over a DataLoader once and keep what evaluation needs: probabilities per branch, labels,
predicted and ground-truth boxes, and (optionally) test-time-augmented probabilities.

Zoom boxes come in the model's own form: Tensor[N, 4] for one region, Tensor[N, k, 4] for
``model.zoom.num_regions`` = k > 1 (most salient first); int64 cells for ``sampler=slice``, continuous
float32 for ``sampler=affine``. :func:`box_header` / :func:`box_cells` write them to CSV.

Everything is batched (one forward per batch and view, under ``torch.inference_mode``); the only Python
loop is over batches and TTA views.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fgzoom.errors import ConfigError


@dataclass
class Predictions:
    """Per-sample outputs of one pass, in loader order (N samples, K classes).

    Attributes:
        index: Tensor[N] int64, position of each sample in its dataset.
        probs: ``{"fused": Tensor[N, K], "raw": ..., "zoom": ...}`` float32 probabilities (only ``fused``
            for the plain model) and ``"tta"`` when test-time augmentation ran.
        labels: Tensor[N] int64, or None when the loader has no labels (predict).
        boxes: zoom boxes ``(y0, x0, y1, x1)`` in input pixels (zoom model only): Tensor[N, 4] (k = 1) or
            Tensor[N, k, 4] (k regions, most salient first); int64 end-exclusive cells for
            ``sampler=slice``, float32 continuous edges (may be fractional) for ``sampler=affine``.
        gt_boxes: Tensor[N, 4] float ground-truth boxes in input pixels, or None.
        has_box: Tensor[N] bool, True where ``gt_boxes`` is a real annotation, or None.
        degenerate: Tensor[N] (or Tensor[N, k]) bool, attention maps that fell back to the whole frame (zoom
            model only).
        tta_views: names of the TTA views averaged into ``probs["tta"]`` (e.g. ``hflip+thr0.3``).
    """

    index: Tensor
    probs: dict[str, Tensor]
    labels: Tensor | None = None
    boxes: Tensor | None = None
    gt_boxes: Tensor | None = None
    has_box: Tensor | None = None
    degenerate: Tensor | None = None
    tta_views: list[str] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return int(self.index.numel())


def _network(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)


THRESHOLD_RULES = ("threshold", "moments")  # the box rules that read model.zoom.threshold


@contextlib.contextmanager
def zoom_threshold(model: nn.Module, threshold: float | None) -> Iterator[None]:
    """Temporarily evaluate a zoom model with box threshold ``threshold`` (``ZoomConfig`` is frozen, so the
    network's config is replaced and restored). ``None`` or a model without a threshold rule: no change."""
    net = _network(model)
    config = getattr(net, "config", None)
    if threshold is None or config is None or getattr(config, "box", None) not in THRESHOLD_RULES:
        yield
        return
    net.config = dataclasses.replace(config, threshold=float(threshold))
    try:
        yield
    finally:
        net.config = config


def tta_views(
    model: nn.Module, hflip: bool, thresholds: Sequence[float] | None
) -> list[tuple[bool, float | None]]:
    """The (flip, threshold) views of test-time augmentation for ``model``.

    Thresholds apply only to a zoom model with ``box=threshold`` or ``moments`` (the other rules and learned
    boxes do not read ``model.zoom.threshold``, so they get hflip views only); each must be in [0, 1).
    Every view works with every zoom option (sampler, number of regions): TTA averages the fused
    probabilities only, never boxes.
    """
    config = getattr(_network(model), "config", None)
    levels: list[float | None] = [None]
    if thresholds and config is not None and getattr(config, "box", None) in THRESHOLD_RULES:
        for t in thresholds:
            if not 0.0 <= float(t) < 1.0:
                raise ConfigError(f"eval.tta_thresholds={list(thresholds)}: each threshold must be in [0, 1)")
        levels = [float(t) for t in thresholds]
    flips = [False, True] if hflip else [False]
    return [(flip, t) for flip in flips for t in levels]


def _view_name(flip: bool, threshold: float | None) -> str:
    parts = (["hflip"] if flip else []) + ([f"thr{threshold:g}"] if threshold is not None else [])
    return "+".join(parts) or "identity"


@torch.inference_mode()
def collect_predictions(
    model: nn.Module,
    loader: Iterable[dict],
    device: torch.device | str | None = None,
    tta: Sequence[tuple[bool, float | None]] | None = None,
    forward_context: contextlib.AbstractContextManager | None = None,
    convert_input=None,
) -> Predictions:
    """Run ``model`` (an FGVCModule, in eval mode for the pass) over ``loader`` and gather predictions.

    Args:
        model: module whose forward maps Tensor[B, 3, H, W] to the network's output dict.
        loader: yields dicts with ``image`` and optionally ``label``, ``box``, ``has_box``, ``index``.
        device: where to run; default the model's device.
        tta: (hflip, threshold) views (see :func:`tta_views`); their fused probabilities are averaged
            into ``probs["tta"]``. None or empty: no TTA.
        forward_context: a factory of the context to run each forward in (e.g. Lightning's precision
            plugin ``forward_context``), so the numbers match ``trainer.test``.
        convert_input: applied to each image batch before the forward (e.g. the precision plugin's).

    Returns:
        :class:`Predictions` with N = number of samples in the loader.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    context = forward_context or contextlib.nullcontext
    chunks: dict[str, list[Tensor]] = {}

    def add(key: str, value: Tensor) -> None:
        chunks.setdefault(key, []).append(value.detach().cpu())

    try:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            if convert_input is not None:
                images = convert_input(images)
            with context():
                out = model(images)  # FGVCModule.forward: channels_last handled there
            add("fused", out["logits"].float().softmax(-1))  # zoom: log of fused probs; plain: logits
            if "logits_raw" in out:
                add("raw", out["logits_raw"].float().softmax(-1))
                add("zoom", out["logits_zoom"].float().softmax(-1))
                add("boxes", out["boxes_image"])
                add("degenerate", out["degenerate"])
            if tta:
                total = torch.zeros_like(out["logits"], dtype=torch.float32)
                for flip, threshold in tta:
                    view = images.flip(-1) if flip else images
                    with zoom_threshold(model, threshold), context():
                        total += model(view)["logits"].float().softmax(-1)
                add("tta", total / len(tta))
            n = images.shape[0]
            add("index", batch["index"] if "index" in batch else torch.full((n,), -1, dtype=torch.long))
            for key in ("label", "box", "has_box"):
                if key in batch:
                    add(key, batch[key])
    finally:
        model.train(was_training)
    if "index" not in chunks:
        raise ConfigError("the loader yielded no samples: nothing to evaluate")
    cat = {k: torch.cat(v) for k, v in chunks.items()}
    probs = {k: cat[k] for k in ("fused", "raw", "zoom", "tta") if k in cat}
    return Predictions(
        index=cat["index"],
        probs=probs,
        labels=cat.get("label"),
        boxes=cat.get("boxes"),
        gt_boxes=cat.get("box"),
        has_box=cat.get("has_box"),
        degenerate=cat.get("degenerate"),
        tta_views=[_view_name(f, t) for f, t in (tta or [])],
    )


def accuracy(probs: Tensor, labels: Tensor, top_k: int = 1) -> float:
    """Top-k accuracy of Tensor[N, K] probabilities against Tensor[N] labels (micro average)."""
    k = min(top_k, probs.shape[1])
    hits = (probs.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return float(hits.float().mean()) if labels.numel() else float("nan")


COORDS = ("y0", "x0", "y1", "x1")


def box_header(boxes: Tensor | None) -> list[str]:
    """CSV column names for zoom boxes Tensor[N, 4] or Tensor[N, k, 4]: ``box1_y0, box1_x0, box1_y1, box1_x1``
    then ``box2_*`` ... ``box<k>_*`` (region 1 = the most salient, the one localization scores). [] for None."""
    if boxes is None:
        return []
    k = 1 if boxes.ndim == 2 else int(boxes.shape[1])
    return [f"box{r}_{c}" for r in range(1, k + 1) for c in COORDS]


def box_cells(boxes: Tensor | None, row: int, decimals: int = 2) -> list[str]:
    """The cells of :func:`box_header` for sample ``row``: integers as they are (``sampler=slice``), float
    boxes (``sampler=affine``) with ``decimals`` decimals. [] for None."""
    if boxes is None:
        return []
    values = boxes[row].reshape(-1)
    if values.is_floating_point():
        return [f"{v:.{decimals}f}" for v in values.tolist()]
    return [str(int(v)) for v in values.tolist()]
