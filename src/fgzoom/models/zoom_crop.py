"""The one crop of the zoom: boxes cut out of a tensor and resized with the sampler and interpolation of a
``ZoomConfig``. The model's zoomed branch and the figures that show it both call it, so a figure shows what
the network read."""

from __future__ import annotations

from torch import Tensor

from fgzoom.models.zoom_config import ZoomConfig
from fgzoom.ops.crop_affine import crop_affine
from fgzoom.ops.crop_resize import crop_resize


def crop_views(x: Tensor, boxes: Tensor, config: ZoomConfig, size: tuple[int, int] | None,
               check_boxes: bool = True) -> Tensor:
    """Crop ``boxes`` Tensor[N, 4] ``(y0, x0, y1, x1)`` in ``x``'s grid out of ``x`` Tensor[N, C, H, W] and
    resize each to ``size`` (None: ``config.scale_factor`` sets the output size). Returns Tensor[N, C, *size].

    ``sampler=continuous``: ``crop_resize`` of the float boxes (``F.interpolate``'s rule at their real edges);
    ``sampler=slice``: ``crop_resize`` of the integer boxes (exact ``F.interpolate`` of each slice);
    ``sampler=grid_sample``: ``crop_affine`` of the float boxes. ``check_boxes=False`` skips crop_resize's
    host-side box check (boxes valid by construction: no CUDA sync with ``size``)."""
    if config.sampler == "grid_sample":
        return crop_affine(x, boxes.float(), size, mode=config.mode, align_corners=config.align_corners)
    by_size = size is not None
    if config.float_boxes:
        boxes = boxes if boxes.is_floating_point() else boxes.float()
    else:
        boxes = boxes.long()
    return crop_resize(
        x, boxes, size=size, scale_factor=None if by_size else config.scale_factor, mode=config.mode,
        align_corners=config.align_corners, antialias=config.antialias,
        recompute_scale_factor=None if by_size else config.recompute_scale_factor, check_boxes=check_boxes,
    )
