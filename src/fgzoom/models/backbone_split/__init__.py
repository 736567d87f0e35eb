"""The backbone split: a timm model cut after one of its ``feature_info`` stages (or transformer blocks).

``split_backbone`` picks the split for the model's family:

* CNNs (resnet, convnext, efficientnet, regnet, ...; stages in NCHW): ``StageSplit`` runs the model's
  modules up to the output of ``feature_info[stage]`` and the rest of ``forward_features`` after it. For a
  resnet, stage 0 is act1, 1 layer1, ..., 4 layer4.
* Swin (``swin_*``, ``swinv2_*``; stages in NHWC): ``ChannelsLastSplit``, the same cut at a stage boundary in
  the model's own layout, handing out and taking back NCHW grids. Without ``dynamic_img_size`` its attention
  masks are built for one grid per stage, so a zoomed view must keep the grid of the stage it was cut from.
* ViT family (``vit_*``, ``deit_*``, ``eva*``, ``vit_*_dinov2``: timm's ``VisionTransformer`` and ``Eva``):
  ``TokenSplit`` cuts after block ``stage`` (the index of ``feature_info`` / ``forward_intermediates``) with
  timm's ``forward_intermediates``. The patch tokens are the grid; the prefix tokens of that pass (class,
  distillation and register tokens) are the split's context, re-attached before the remaining blocks (repeated
  for k zoomed views of a sample), so in a zoomed pass they carry what they gathered from the whole image up to
  the split and attend to the zoomed patch tokens from then on. The final norm and timm's ``forward_head``
  (pooling, classifier) follow.

Every split has the same interface: ``f, context = forward_to(x)`` with ``f`` Tensor[B, C, h, w] and ``context``
what the tail needs besides ``f`` (the prefix tokens; None for CNNs and Swin); ``forward_from(f, context)`` ->
the final features; ``forward_head`` is timm's own. ``forward_head(forward_from(*forward_to(x)))`` equals
``model(x)``. Negative stages count from the end; the default -2 runs only the last stage (or block) twice.
Any other family is one ``ConfigError`` naming ``model.backbone.name`` and the families above.
"""

from __future__ import annotations

from timm.models.eva import Eva
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from fgzoom.errors import ConfigError
from fgzoom.models.backbone_split.base import (
    SUPPORTED_FAMILIES,
    BackboneSplit,
    check_input_size,
    fixed_input_size,
    resolve_stage,
    unsupported,
)
from fgzoom.models.backbone_split.cnn import StageSplit
from fgzoom.models.backbone_split.swin import ChannelsLastSplit
from fgzoom.models.backbone_split.tokens import TokenSplit

__all__ = [
    "SUPPORTED_FAMILIES", "BackboneSplit", "ChannelsLastSplit", "StageSplit", "TokenSplit", "check_input_size",
    "check_zoom_size", "fixed_input_size", "resolve_stage", "split_backbone", "split_family",
]

TOKEN_MODELS = (VisionTransformer, Eva)
CHANNELS_LAST_MODELS = (SwinTransformer, SwinTransformerV2)
SPLITS: dict[str, type[BackboneSplit]] = {"cnn": StageSplit, "channels_last": ChannelsLastSplit, "tokens": TokenSplit}


def split_family(model: nn.Module) -> str | None:
    """``tokens`` (ViT family), ``channels_last`` (Swin), ``cnn`` (NCHW feature stages), or None when the model
    cannot be split (other token models, NLC/NHWC stages, no ``feature_info``)."""
    if isinstance(model, TOKEN_MODELS):
        return "tokens"
    if isinstance(model, CHANNELS_LAST_MODELS):
        return "channels_last"
    token_like = any(getattr(model, a, None) is not None for a in ("num_prefix_tokens", "cls_token", "pos_embed"))
    layout = getattr(model, "output_fmt", "NCHW")
    if getattr(model, "feature_info", None) and hasattr(model, "forward_head") and not token_like and layout == "NCHW":
        return "cnn"
    return None


def split_backbone(model: nn.Module, stage: int, need_after: bool = True, name: str | None = None) -> BackboneSplit:
    """The split of ``model`` for its family (``StageSplit``, ``ChannelsLastSplit`` or ``TokenSplit``).

    Args:
        model: a timm model.
        stage: ``model.zoom.stage``, an index into the model's ``feature_info`` (negative counts from the end).
        need_after: require at least one stage after ``stage`` (feature-level zoom).
        name: the ``model.backbone.name`` the errors name (default: the model's class name).

    Raises:
        ConfigError: the family cannot be split, or ``stage`` is out of range.
    """
    family = split_family(model)
    cls = SPLITS.get(family)
    if cls is None:
        raise unsupported(name or type(model).__name__, model)
    return cls(model, stage, need_after, name)


def check_zoom_size(split: BackboneSplit, level: str, size: int | tuple[int, int] | None,
                    scale_factor: float | None, glimpse_size: float) -> None:
    """Raise ConfigError when ``model.zoom.size`` (or ``scale_factor``) gives a zoomed view that the split's
    model cannot run (``BackboneSplit.zoom_grid``: Swin's window masks, a fixed-size ViT at level=image).
    None ``size`` keeps the cropped tensor's grid, which always runs."""
    grid = split.zoom_grid(level)
    if grid is None:
        return
    where = "its input size (model.backbone.img_size)" if level == "image" else f"the grid of stage {split.stage}"
    fix = ("set model.zoom.size=null (the cropped grid) or model.backbone.kwargs={dynamic_img_size: true}")
    if size is not None:
        wanted = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if wanted != grid:
            shown = size if isinstance(size, int) else list(size)
            raise ConfigError(
                f"model.zoom.size={shown}: {split.name} at level={level} needs the zoomed view at {where}, "
                f"{grid[0]}x{grid[1]}; {fix}"
            )
    if scale_factor is not None:
        side = [max(1, round(glimpse_size * g)) for g in grid]  # the glimpse box on that grid (ZoomNet.boxes)
        out = tuple(int(s * scale_factor) for s in side)
        if out != grid:
            raise ConfigError(
                f"model.zoom.scale_factor={scale_factor}: a glimpse of {side[0]}x{side[1]} zooms to {out[0]}x{out[1]}, "
                f"but {split.name} at level={level} needs {where}, {grid[0]}x{grid[1]}; set model.zoom.scale_factor "
                f"to 1/model.zoom.glimpse_size or pass model.backbone.kwargs={{dynamic_img_size: true}}"
            )
