"""The picture grid: what the zoom model looked at and what it saw.

Each cell shows the input image (de-normalized) with the mean attention map overlaid as a heatmap, the
zoom box (red) and the ground-truth box when known (lime); next to it the zoomed view as the model saw
it; above, the predicted and the true class. For ``level=image`` the zoomed view is the network's own
zoomed input. For ``level=feature`` the network zooms a feature map, which is not a picture: the panel
shows the same box cut from the image and resized with the same ``mode``/``align_corners``/``antialias``
(via :func:`fgzoom.ops.crop_resize`), and its title says so. The plain model (no attention) gets the
images with predicted and true classes only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from fgzoom.ops import crop_resize
from fgzoom.ops.boxes import resize_attention

ZOOM_COLOR = "red"
GT_COLOR = "lime"


@dataclass
class GridData:
    """What one grid shows, for N images of size H x W (all on the CPU).

    Attributes:
        images: Tensor[N, 3, H, W] normalized network inputs.
        probs: Tensor[N, K] fused probabilities.
        labels: Tensor[N] int64 true classes, or None (predict).
        gt_boxes: Tensor[N, 4] ``(y0, x0, y1, x1)`` input pixels, or None; has_box: Tensor[N] bool or None.
        attention: Tensor[N, H, W] in [0, 1] resized to the input, or None (plain model).
        boxes: Tensor[N, 4] int64 zoom boxes in input pixels, or None.
        zoomed: Tensor[N, 3, h, w] normalized zoomed view in image space, or None.
        degenerate: Tensor[N] bool, or None.
        zoom_note: how the zoomed view was made (panel title).
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
    knobs = [config.mode]
    if config.align_corners is not None:
        knobs.append(f"align_corners={config.align_corners}")
    if config.antialias:
        knobs.append("antialias")
    return ", ".join(knobs)


@torch.inference_mode()
def grid_data(model: nn.Module, batch: dict[str, Tensor]) -> GridData:
    """Run ``model`` (FGVCModule or its network) on ``batch["image"]`` Tensor[N, 3, H, W] in eval mode and
    gather what :func:`grid_figure` draws. The model's train/eval mode is restored afterwards."""
    net = getattr(model, "net", model)
    device = next(net.parameters()).device
    images = batch["image"].to(device)
    was_training = net.training
    net.eval()
    try:
        config = getattr(net, "config", None)
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
    if config is None:
        return data
    grid = tuple(images.shape[-2:])
    data.attention = resize_attention(out["attention"].float(), grid).clamp(0, 1).cpu()
    data.boxes = out["boxes_image"].cpu()
    data.degenerate = out["degenerate"].cpu()
    if config.level == "image":
        data.zoomed = out["zoomed"].float().cpu()
        data.zoom_note = f"zoomed input ({_interp_note(config)})"
    else:
        data.zoomed = crop_resize(
            images.float(),
            out["boxes_image"],
            size=grid,
            mode=config.mode,
            align_corners=config.align_corners,
            antialias=config.antialias,
        ).cpu()
        data.zoom_note = f"image crop, {_interp_note(config)} (net zooms features)"
    return data


def _to_rgb(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Tensor[3, H, W] normalized -> HxWx3 float array in [0, 1]."""
    m = torch.tensor(list(mean), dtype=torch.float32)[:, None, None]
    s = torch.tensor(list(std), dtype=torch.float32)[:, None, None]
    return (image.float() * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def _rect(box: Sequence[float], color: str, style: str = "-") -> Rectangle:
    """An end-exclusive pixel box ``(y0, x0, y1, x1)`` as a patch on imshow's grid (pixel centres at ints)."""
    y0, x0, y1, x1 = (float(v) for v in box)
    return Rectangle(
        (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.8, linestyle=style
    )


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def grid_figure(
    data: GridData,
    class_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    title: str = "",
    names: Sequence[str] | None = None,
) -> Figure:
    """Draw :class:`GridData` as a matplotlib Figure (no pyplot state).

    Args:
        class_names: K names for predicted/true labels.
        mean, std: the normalization of ``data.images`` (to show real colours).
        title: figure title.
        names: optional per-image caption (e.g. the file name in predict).
    """
    n = data.images.shape[0]
    zoom = data.attention is not None
    per_cell = 2 if zoom else 1
    cells_per_row = max(1, math.ceil(math.sqrt(n))) if n > 1 else 1
    rows = math.ceil(n / cells_per_row)
    cols = cells_per_row * per_cell
    # a fixed layout (inches) instead of a layout engine: cheap enough to draw every epoch
    panel, gap, title_h, top_h = 2.2, 0.12, 0.55 if names is None else 0.7, 0.25
    bottom_h = 0.35 if zoom or data.has_box is not None else 0.1
    width = cols * panel + (cols - 1) * gap + 0.2
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
            ax.add_patch(_rect(data.boxes[i].tolist(), ZOOM_COLOR))
        if data.gt_boxes is not None and data.has_box is not None and bool(data.has_box[i]):
            ax.add_patch(_rect(data.gt_boxes[i].tolist(), GT_COLOR, "--"))
        p = int(pred[i])
        text = f"pred: {_short(class_names[p])} ({float(conf[i]):.2f})"
        color = "black"
        if data.labels is not None and int(data.labels[i]) >= 0:
            t = int(data.labels[i])
            text += f"\ntrue: {_short(class_names[t])}"
            color = "green" if t == p else "red"
        if names is not None:
            text = f"{_short(names[i], 32)}\n{text}"
        if data.degenerate is not None and bool(data.degenerate[i]):
            text += " [flat attention]"
        ax.set_title(text, fontsize=7, color=color, loc="left")
        if zoom:
            zax = axes[r, c * per_cell + 1]
            zax.imshow(_to_rgb(data.zoomed[i], mean, std), interpolation="nearest")
            zax.set_title(data.zoom_note, fontsize=6, loc="left", wrap=True)
    handles = []
    if zoom:
        handles.append(
            Rectangle((0, 0), 1, 1, fill=False, edgecolor=ZOOM_COLOR, linewidth=1.8, label="zoom box")
        )
    if data.has_box is not None and bool(data.has_box.any()):
        handles.append(
            Line2D([], [], color=GT_COLOR, linestyle="--", linewidth=1.8, label="ground-truth box")
        )
    if zoom:
        handles.append(
            Rectangle((0, 0), 1, 1, facecolor="orangered", alpha=0.5, label="attention (jet heatmap)")
        )
    if handles:
        fig.legend(handles=handles, loc="lower center", ncols=len(handles), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title or "predictions", fontsize=10, y=1 - 0.08 / height, va="top")
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` to an HxWx3 uint8 array (for TensorBoard ``add_image(..., dataformats="HWC")``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def zoom_grid(
    model: nn.Module,
    dataset,
    indices: Sequence[int],
    class_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    title: str = "",
) -> Figure:
    """Convenience: images ``indices`` of ``dataset`` through ``model`` -> the grid Figure."""
    return grid_figure(grid_data(model, dataset_batch(dataset, indices)), class_names, mean, std, title)
