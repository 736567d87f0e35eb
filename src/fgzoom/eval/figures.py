"""The picture grid: what the zoom model looked at and what it saw.

Each cell shows the input image (de-normalized) with the mean attention map overlaid as a heatmap, the
zoom box (red; with ``model.zoom.num_regions`` = k > 1 the other regions dashed in :data:`REGION_COLORS`,
numbered by salience) and the ground-truth box when known (lime); next to it the zoomed view as the model
saw it (with k > 1 a mosaic of the k views, framed in their boxes' colours); above, the predicted and the
true class. Boxes are drawn where they are, integer (``sampler=slice``) or fractional (``continuous``, ``grid_sample``).
With ``box=ranked`` the candidates are drawn too, thin, each with its score (:data:`CANDIDATE_COLOR`); the
chosen ones are the zoom boxes above them.
For ``level=image`` the zoomed view is the network's own zoomed input. For ``level=feature`` the network
zooms a feature map, which is not a picture: the panel shows the same boxes cut from the image and resized
with the same sampler and ``mode``/``align_corners``/``antialias`` (:func:`fgzoom.ops.crop_resize` for
``slice``, :func:`fgzoom.ops.crop_affine.crop_affine` for ``affine``), and its title says so. The plain
model (no attention) gets the images with predicted and true classes only; ``model=bap`` (no crop) the images
with its attention and boxes, without a zoomed panel.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from fgzoom.data.batches import normalize_images
from fgzoom.models.zoom_config import ZoomConfig
from fgzoom.models.zoom_crop import crop_views
from fgzoom.ops.attention_boxes import resize_attention
from fgzoom.ops.interpolation import interp_label

ZOOM_COLOR = "red"
GT_COLOR = "lime"
# regions 2, 3, ... of k > 1 (dashed; cycled); region 1, the most salient, is ZOOM_COLOR
REGION_COLORS = ("orange", "magenta", "cyan", "yellow", "deepskyblue", "white")
CANDIDATE_COLOR = "white"  # box=ranked: every candidate, thin, with its score


@dataclass
class GridData:
    """What one grid shows, for N images of size H x W (all on the CPU).

    Attributes:
        images: Tensor[N, 3, H, W] normalized network inputs.
        probs: Tensor[N, K] fused probabilities.
        labels: Tensor[N] int64 true classes, or None (predict).
        gt_boxes: Tensor[N, 4] ``(y0, x0, y1, x1)`` input pixels, or None; has_box: Tensor[N] bool or None.
        attention: Tensor[N, H, W] in [0, 1] resized to the input, or None (plain model).
        boxes: zoom boxes in input pixels as the model returns them, or None: Tensor[N, 4] (one region) or
            Tensor[N, k, 4] (most salient first); int64 (``sampler=slice``) or float (the others).
        zoomed: normalized zoomed views in image space, or None: Tensor[N, 3, h, w] (one region) or
            Tensor[N, k, 3, h, w].
        degenerate: Tensor[N] (or Tensor[N, k]) bool, or None.
        zoom_note: how the zoomed view was made (panel title).
        steps: the k boxes are the steps of a recursive zoom (each inside the one before), not k regions.
        candidates: Tensor[N, C, 4] float, input pixels: the candidate boxes of ``box=ranked`` (of step 1 for a
            recursive zoom), or None; candidate_scores: Tensor[N, C], their scores.
    """

    images: Tensor
    probs: Tensor
    labels: Tensor | None = None
    gt_boxes: Tensor | None = None
    has_box: Tensor | None = None
    attention: Tensor | None = None
    boxes: Tensor | None = None
    zoomed: Tensor | None = None
    degenerate: Tensor | None = None
    zoom_note: str = ""
    steps: bool = False
    candidates: Tensor | None = None
    candidate_scores: Tensor | None = None

    def select(self, rows: Sequence[int]) -> GridData:
        """The same data for the images ``rows`` only."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return GridData(**{k: v[index] if isinstance(v, Tensor) else v for k, v in values.items()})


def select_indices(n: int, total: int) -> list[int]:
    """``n`` indices spread evenly over ``range(total)`` (datasets are sorted by class: this mixes classes)."""
    if n <= 0 or total <= 0:
        return []
    if n >= total:
        return list(range(total))
    return torch.linspace(0, total - 1, n).round().long().unique().tolist()


def dataset_batch(dataset, indices: Sequence[int]) -> dict[str, Tensor]:
    """Stack ``dataset[i]`` dicts (image, label, box, has_box, index) for ``indices`` into one batch."""
    items = [dataset[i] for i in indices]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def _interp_note(config) -> str:
    """The zoom's interpolation as ``interp_label`` writes it, led by the sampler unless it is the default."""
    sampler = getattr(config, "sampler", "continuous")
    prefix = "" if sampler == "continuous" else f"{sampler} "
    return prefix + interp_label(config.mode, config.align_corners, config.antialias)


def zoom_title(config) -> str:
    """``zoom level=<level>, box=<rule>, sampler=<sampler>[, C=<candidates>][, k=<k>]`` for figure titles (a
    ``ZoomConfig``); ``bap (no crop), box=<rule>[, k=<k>]`` for ``crop=false``."""
    if not config.crop:
        text = f"bap (no crop), box={config.box}"
    else:
        text = f"zoom level={config.level}, box={config.box}, sampler={config.sampler}"
    text += f", C={config.candidates}" if config.box == "ranked" else ""
    return text + (f", k={config.num_regions}" if config.num_regions > 1 else "")


def _regions(boxes: Tensor) -> Tensor:
    """Boxes Tensor[N, 4] or Tensor[N, k, 4] -> Tensor[N, k, 4]."""
    return boxes[:, None] if boxes.ndim == 2 else boxes


def image_crops(images: Tensor, boxes: Tensor, config: ZoomConfig, size: tuple[int, int]) -> Tensor:
    """Cut ``boxes`` (Tensor[N, 4] or Tensor[N, k, 4], input pixels, as the model returns them) out of
    ``images`` Tensor[N, 3, H, W] and resize them to ``size`` the way the model's sampler resizes its crops
    (``crop_views``, the crop of the model's zoomed branch). Returns Tensor[N, 3, *size] (one region) or Tensor[N, k, 3, *size]."""
    regions = _regions(boxes)
    if regions.is_floating_point() and config.sampler == "slice":
        # the image region of whole feature cells is fractional where the backbone's cells sit off their
        # pixel blocks (cell_offset): crop it exactly, as the continuous sampler does
        config = dataclasses.replace(config, sampler="continuous")
    n, k = regions.shape[:2]
    x = images.float().repeat_interleave(k, dim=0) if k > 1 else images.float()
    flat = regions.reshape(-1, 4).to(x.device)
    crops = crop_views(x, flat, config, size)
    return crops if boxes.ndim == 2 else crops.view(n, k, *crops.shape[1:])


@torch.inference_mode()
def grid_data(
    model: nn.Module, batch: dict[str, Tensor], mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> GridData:
    """Run ``model`` (FGVCModule or its network) on ``batch["image"]`` Tensor[N, 3, H, W] in eval mode and
    gather what :func:`grid_figure` draws. The model's train/eval mode is restored afterwards.

    ``image`` is the normalized float network input, or the loader's uint8 images, which are normalized on
    the model's device with ``mean``/``std`` (then required) as training batches are."""
    net = getattr(model, "net", model)
    device = next(net.parameters()).device
    images = batch["image"].to(device)
    if images.dtype == torch.uint8:
        if mean is None or std is None:
            raise ValueError("grid_data: uint8 images need the mean and std to normalize them")
        images = normalize_images(images, mean, std)
    config = getattr(net, "config", None)  # the zoom settings: sampler, mode, level of the zoomed panel
    was_training = net.training
    net.eval()
    try:
        out = net(images, return_zoomed=True) if config is not None else net(images)
    finally:
        net.train(was_training)
    data = GridData(
        images=images.cpu(),
        probs=out["logits"].float().softmax(-1).cpu(),
        labels=batch["label"].cpu() if "label" in batch else None,
        gt_boxes=batch["box"].cpu() if "box" in batch else None,
        has_box=batch["has_box"].cpu() if "has_box" in batch else None,
    )
    if "boxes_image" not in out:  # a network that does not zoom: images and classes only
        return data
    grid = tuple(images.shape[-2:])
    data.steps = "boxes_steps" in out  # a recursive zoom: every step's box
    boxes = out["boxes_steps"] if data.steps else out["boxes_image"]
    offset = getattr(net, "offset", (0.0, 0.0))  # where the network's cells sit in the image
    data.attention = resize_attention(out["attention"].float(), grid, offset).clamp(0, 1).cpu()
    data.boxes = boxes.cpu()
    data.degenerate = out["degenerate"].cpu()
    if "candidates" in out:  # box=ranked: every candidate and its score
        data.candidates = out["candidates"].float().cpu()
        data.candidate_scores = out["candidate_scores"].float().cpu()
    if not config.crop:  # model=bap: where the attention boxes, no zoomed view to show
        return data
    if data.steps:  # every step's view, cut from the image the way the network cut it
        data.zoomed = image_crops(images, boxes, config, tuple(out["zoomed"].shape[-2:])).cpu()
        data.zoom_note = f"zoomed input ({boxes.shape[1]} steps, {_interp_note(config)})"
        return data
    k = 1 if boxes.ndim == 2 else boxes.shape[1]
    views = f"{k} views, " if k > 1 else ""
    if config.level == "image":
        zoomed = out["zoomed"].float()  # [N*k, 3, h, w], sample-major
        data.zoomed = (zoomed if boxes.ndim == 2 else zoomed.view(-1, k, *zoomed.shape[1:])).cpu()
        data.zoom_note = f"zoomed input ({views}{_interp_note(config)})"
    else:
        data.zoomed = image_crops(images, boxes, config, grid).cpu()
        data.zoom_note = f"image crop, {views}{_interp_note(config)} (net zooms features)"
    return data


def _to_rgb(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Tensor[3, H, W] normalized -> HxWx3 float array in [0, 1]."""
    m = torch.tensor(list(mean), dtype=torch.float32)[:, None, None]
    s = torch.tensor(list(std), dtype=torch.float32)[:, None, None]
    return (image.float() * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def _rect(box: Sequence[float], color: str, style: str = "-", linewidth: float = 1.8) -> Rectangle:
    """A box ``(y0, x0, y1, x1)`` on cell edges (0 = the top/left edge of the first pixel; integer end-exclusive
    or fractional) as a patch on imshow's grid (pixel centres at ints)."""
    y0, x0, y1, x1 = (float(v) for v in box)
    return Rectangle(
        (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=linewidth, linestyle=style
    )


def region_style(r: int) -> tuple[str, str, float]:
    """(colour, line style, width) of region ``r`` (0 = the most salient) of the zoom boxes."""
    if r == 0:
        return ZOOM_COLOR, "-", 1.8
    return REGION_COLORS[(r - 1) % len(REGION_COLORS)], "--", 1.3


def _draw_candidates(ax, candidates: Tensor, scores: Tensor) -> None:
    """The candidate boxes Tensor[C, 4] of ``box=ranked``, thin, each with its score Tensor[C] at its top-left
    corner (a repeated candidate, the padding of a small pool, once)."""
    seen = set()
    for box, score in zip(candidates.tolist(), scores.tolist(), strict=True):
        key = tuple(round(v, 3) for v in box)
        if key in seen:
            continue
        seen.add(key)
        ax.add_patch(_rect(box, CANDIDATE_COLOR, "-", 0.6))
        ax.text(box[1] - 0.2, box[0] - 0.2, f"{score:.2f}", color=CANDIDATE_COLOR, fontsize=4.5, ha="left",
                va="top", clip_on=True)


def _mosaic(views: Tensor, mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, list[tuple]]:
    """k views Tensor[k, 3, h, w] -> one HxWx3 picture (ceil(sqrt(k)) columns, 1-pixel white gaps) and each
    view's ``(y0, x0, y1, x1)`` in it."""
    k, _, h, w = views.shape
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    gap = max(1, round(0.04 * max(h, w)))
    canvas = np.ones((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), dtype=np.float32)
    places = []
    for r in range(k):
        y, x = divmod(r, cols)
        y0, x0 = y * (h + gap), x * (w + gap)
        canvas[y0:y0 + h, x0:x0 + w] = _to_rgb(views[r], mean, std)
        places.append((y0, x0, y0 + h, x0 + w))
    return canvas, places


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def _legend_handles(data: GridData) -> list:
    """Legend entries of :func:`grid_figure`: zoom box(es), ground-truth box, attention."""
    zoom = data.attention is not None
    handles = []
    if zoom:
        k = _regions(data.boxes).shape[1]
        if data.steps:
            first, rest = "zoom box, step 1", (f"steps 2-{k}" if k > 2 else "step 2 (inside step 1)")
        else:
            best = "best score" if data.candidates is not None else "most salient"
            first, rest = f"zoom box 1 ({best})", (f"zoom boxes 2-{k}" if k > 2 else "zoom box 2")
        handles.append(
            Rectangle((0, 0), 1, 1, fill=False, edgecolor=ZOOM_COLOR, linewidth=1.8,
                      label="zoom box" if k == 1 else first)
        )
        if k > 1:
            handles.append(Line2D([], [], color=REGION_COLORS[0], linestyle="--", linewidth=1.3,
                                  label=rest))
        if data.candidates is not None:
            outline = [patheffects.withStroke(linewidth=2.0, foreground="black")]  # white on the white legend
            handles.append(Line2D([], [], color=CANDIDATE_COLOR, linewidth=0.8, path_effects=outline,
                                  label="candidates (score)"))
    if data.has_box is not None and bool(data.has_box.any()):
        handles.append(
            Line2D([], [], color=GT_COLOR, linestyle="--", linewidth=1.8, label="ground-truth box")
        )
    if zoom:
        handles.append(
            Rectangle((0, 0), 1, 1, facecolor="orangered", alpha=0.5, label="attention (jet heatmap)")
        )
    return handles


def grid_figure(
    data: GridData,
    class_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    title: str = "",
) -> Figure:
    """Draw :class:`GridData` as a matplotlib Figure (no pyplot state).

    Args:
        class_names: K names for predicted/true labels.
        mean, std: the normalization of ``data.images`` (to show real colours).
        title: figure title.
    """
    n = data.images.shape[0]
    zoom = data.attention is not None
    per_cell = 2 if data.zoomed is not None else 1
    cells_per_row = max(1, math.ceil(math.sqrt(n))) if n > 1 else 1
    rows = math.ceil(n / cells_per_row)
    cols = cells_per_row * per_cell
    # a fixed layout (inches) instead of a layout engine: cheap enough to draw every epoch
    panel, gap, title_h, top_h = 2.2, 0.12, 0.55, 0.25
    width = cols * panel + (cols - 1) * gap + 0.2
    handles = _legend_handles(data)
    legend_cols = max(1, min(len(handles), int(width // 2.0)))  # about 2 inches per entry at fontsize 8
    bottom_h = 0.1 + 0.25 * math.ceil(len(handles) / legend_cols)
    height = rows * (panel + title_h) + top_h + bottom_h
    fig = Figure(figsize=(width, height), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={
        "left": 0.1 / width, "right": 1 - 0.1 / width, "bottom": bottom_h / height,
        "top": 1 - (top_h + title_h) / height, "wspace": gap / panel, "hspace": title_h / panel,
    })
    for ax in axes.flat:
        ax.set_axis_off()
    conf, pred = data.probs.max(dim=1)
    for i in range(n):
        r, c = divmod(i, cells_per_row)
        ax = axes[r, c * per_cell]
        ax.imshow(_to_rgb(data.images[i], mean, std), interpolation="nearest")
        if zoom:
            ax.imshow(
                data.attention[i].numpy(), cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0, interpolation="bilinear"
            )
        if data.gt_boxes is not None and data.has_box is not None and bool(data.has_box[i]):
            ax.add_patch(_rect(data.gt_boxes[i].tolist(), GT_COLOR, "--"))
        if zoom and data.candidates is not None:
            _draw_candidates(ax, data.candidates[i], data.candidate_scores[i])
        if zoom:
            regions = _regions(data.boxes[i:i + 1])[0]  # [k, 4]
            for j in reversed(range(regions.shape[0])):  # region 1 drawn last, on top
                color, style, lw = region_style(j)
                ax.add_patch(_rect(regions[j].tolist(), color, style, lw))
                if regions.shape[0] > 1:
                    y0, x0 = (float(v) for v in regions[j, :2])
                    ax.text(x0 + 0.5, y0 + 0.5, str(j + 1), color=color, fontsize=6, fontweight="bold",
                            ha="left", va="top", clip_on=True)
        p = int(pred[i])
        text = f"pred: {_short(class_names[p])} ({float(conf[i]):.2f})"
        color = "black"
        if data.labels is not None and int(data.labels[i]) >= 0:
            t = int(data.labels[i])
            text += f"\ntrue: {_short(class_names[t])}"
            color = "green" if t == p else "red"
        if data.degenerate is not None:
            flat = data.degenerate[i].reshape(-1)
            if bool(flat[0]):
                text += " [flat attention]"
            elif bool(flat.any()):
                text += f" [flat: region {', '.join(str(j + 1) for j in flat.nonzero()[:, 0].tolist())}]"
        ax.set_title(text, fontsize=7, color=color, loc="left")
        if data.zoomed is not None:
            zax = axes[r, c * per_cell + 1]
            if data.zoomed.ndim == 5:  # k views: a mosaic framed in the boxes' colours
                picture, places = _mosaic(data.zoomed[i], mean, std)
                zax.imshow(picture, interpolation="nearest")
                for j, place in enumerate(places):
                    color, style, lw = region_style(j)
                    zax.add_patch(_rect(place, color, style, lw))
            else:
                zax.imshow(_to_rgb(data.zoomed[i], mean, std), interpolation="nearest")
            zax.set_title(data.zoom_note, fontsize=6, loc="left", wrap=True)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncols=legend_cols, fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title or "predictions", fontsize=10, y=1 - 0.08 / height, va="top")
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def zoom_grid(
    model: nn.Module,
    dataset,
    indices: Sequence[int],
    class_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    title: str = "",
) -> Figure:
    """Images ``indices`` of ``dataset`` (uint8, normalized with ``mean``/``std``) through ``model`` -> the grid
    Figure; for a zoom model the title ends with its zoom settings (:func:`zoom_title`)."""
    data = grid_data(model, dataset_batch(dataset, indices), mean, std)
    if data.boxes is not None:
        title = f"{title} ({zoom_title(getattr(model, 'net', model).config)})"
    return grid_figure(data, class_names, mean, std, title)
