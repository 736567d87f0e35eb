"""Measure where the cells of a split's grid sit in the input image: the cell offset of
:mod:`fgzoom.ops.cell_geometry`.

A CNN's padding, pooling and shortcut paths put a cell's receptive field off the middle of its block of pixels
by up to half a stride (a timm ResNet: on the block's first pixel; TF "same" padding: on its last; ResNet-D's
average-pool shortcuts: half a stride per pooled stage). Rather than derive that from each family's layer
stack, ``measure_cell_offset`` reads it off the network itself, once, when the model is built:

1. A copy of the split is made **positive and linear**: every weight replaced by its absolute value and each
   output unit's weights normalized to sum 1, biases and BatchNorm means zeroed, BatchNorm scales kept relative
   to their mean (a zero-initialized residual branch stays off, as in the network), max pools replaced by
   average pools over the same windows. On a small constant positive input every activation is then positive
   and in its near-linear range, so each path contributes with the weight the network gives it.
2. The input gradient of the centre cell's channel sum is the cell's receptive field. Its centroid, minus
   where the plain resize rule puts the cell, is the offset.

The probe image is ``n`` cells of the split's stride on each side (``n`` odd, at least 512 pixels: a smaller
one cuts the wide receptive fields of deep stages and biases the centroid, e.g. by 3.5 px at 288 for
``tf_efficientnet_lite0``'s last stage), so the
centre cell is the image's and its receptive field is cut by the border symmetrically; sizes that are a
multiple of the stride give every TF-"same" layer the padding it has at 224 or 448. Patch-embedding
transformers (ViT, Swin) need no measurement: a patch cell is centred on its patch (offset 0). Models built
for one input size are probed at that size.
"""

from __future__ import annotations

import copy
import math

import torch
from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from fgzoom.models.backbone_split.base import BackboneSplit
from fgzoom.models.backbone_split.cnn import StageSplit

MIN_PROBE_PIXELS = 512
INPUT_LEVEL = 1e-3


def probe_size(reduction: int, fixed: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of the probe image: ``fixed`` when the model takes one size, else an odd number of cells of
    ``reduction`` pixels, at least ``MIN_PROBE_PIXELS`` and 7 cells."""
    if fixed is not None:
        return fixed
    cells = max(7, math.ceil(MIN_PROBE_PIXELS / reduction))
    cells += 1 - cells % 2
    return cells * reduction, cells * reduction


def _averaging_pool(pool: nn.MaxPool2d) -> nn.Module:
    """The average pool over the same windows as ``pool``: a max pool's gradient picks one pixel per window (the
    first on a flat input), its receptive field is the window."""
    if isinstance(pool, MaxPool2dSame):
        return AvgPool2dSame(pool.kernel_size, pool.stride, ceil_mode=pool.ceil_mode, count_include_pad=False)
    return nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode, count_include_pad=False)


def _replace_max_pools(model: nn.Module) -> None:
    """Every max pool of ``model`` (and of a split's table of the modules it runs) becomes ``_averaging_pool``."""
    replaced: dict[int, nn.Module] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, name, replaced.setdefault(id(child), _averaging_pool(child)))
    table = getattr(model, "_modules_by_name", None)  # StageSplit runs its modules from this dict
    if table is not None:
        for name, module in table.items():
            table[name] = replaced.get(id(module), module)


@torch.no_grad()
def make_positive_linear(model: nn.Module) -> nn.Module:
    """Turn ``model`` (a copy: changed in place) into the positive linear probe of the module docstring."""
    _replace_max_pools(model)
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.running_var is not None:
            scale = module.running_var.double().add(module.eps).rsqrt()
            if module.weight is not None:
                scale = scale * module.weight.double().abs()
            mean = scale.mean()
            scale = scale / mean if mean > 0 else scale
            module.running_mean.zero_()
            module.running_var.fill_(1.0 - module.eps)
            if module.weight is not None:
                module.weight.copy_(scale)
            if module.bias is not None:
                module.bias.zero_()
            continue
        for name, param in module.named_parameters(recurse=False):
            if "bias" in name:
                param.zero_()
            elif param.dim() >= 2:  # a conv/linear weight [out, in, ...]: each output unit's taps sum to 1
                param.abs_()
                param.div_(param.flatten(1).sum(1).clamp_min(1e-12).view(-1, *[1] * (param.dim() - 1)))
            else:
                param.abs_()
    return model


def receptive_field_centre(split: BackboneSplit, size: tuple[int, int]) -> tuple[tuple[float, float], tuple[int, int], tuple[int, int]]:
    """Centroid (continuous input coordinates) of the positive-linear probe's receptive field of the centre cell.

    Returns ``((cy, cx), (ci, cj), (h, w))``: the centroid, the cell measured and the grid size.
    """
    probe = make_positive_linear(copy.deepcopy(split).eval())
    # a small input keeps every activation in its near-linear range (ReLU6 and the like never saturate)
    x = torch.full((1, 3, *size), INPUT_LEVEL, requires_grad=True)
    with torch.enable_grad():
        grid, _ = probe.forward_to(x)
        h, w = grid.shape[-2:]
        ci, cj = h // 2, w // 2
        grid[0, :, ci, cj].sum().backward()
    field: Tensor = x.grad.abs().sum(dim=(0, 1)).double()  # [H, W]
    total = field.sum().clamp_min(1e-300)
    ys = torch.arange(size[0], dtype=torch.float64) + 0.5
    xs = torch.arange(size[1], dtype=torch.float64) + 0.5
    cy = float((field.sum(1) * ys).sum() / total)
    cx = float((field.sum(0) * xs).sum() / total)
    return (cy, cx), (ci, cj), (h, w)


_MEASURED: dict[tuple, tuple[float, float]] = {}


def measure_cell_offset(split: BackboneSplit, cache_key: tuple | None = None) -> tuple[float, float]:
    """``(delta_y, delta_x)`` in cells: where the split's grid cells sit in its input (``cell_geometry``).

    0 for the patch-embedding families; measured on a positive linear copy for CNNs (the split itself is not
    changed). Rounded to 1/1000 of a cell. ``cache_key`` (e.g. the backbone config and stage): a process
    measures each key once (the offset depends on the architecture and, through its scales, on the weights
    the backbone was built with, which the key should name).
    """
    if not isinstance(split, StageSplit):  # the one family with padding to measure
        return 0.0, 0.0
    size = probe_size(split.reduction, split._input_size)
    key = None if cache_key is None else (*cache_key, size)
    if key is not None and key in _MEASURED:
        return _MEASURED[key]
    (cy, cx), (ci, cj), (h, w) = receptive_field_centre(split, size)
    offset = round(cy * h / size[0] - (ci + 0.5), 3), round(cx * w / size[1] - (cj + 0.5), 3)
    if key is not None:
        _MEASURED[key] = offset
    return offset
