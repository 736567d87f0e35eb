"""Bring a foreign weights file to a timm model: map tensors by order, write a timm-named safetensors file.

Many repositories ship ImageNet weights for an architecture timm also has, with the same tensors in the same
order but other names (``_conv_stem.weight`` vs ``conv_stem.weight``). ``map_state_dict_by_order`` renames
them: the k-th matched tensor of the source becomes the k-th matched tensor of the target, after checking
that both sides hold the same number of tensors and that every pair has the same shape.

Which tensors are matched: floating-point ones only (parameters and float buffers such as BatchNorm
``running_mean``/``running_var``). Integer tensors, i.e. BatchNorm ``num_batches_tracked`` counters (and any
integer index buffer), are skipped on both sides, so a file that has no counters maps onto a model that
has them and the other way round; the result takes the target's own value for them, so it is a complete
state dict that loads with ``strict=True``. Matched tensors are cast to the target tensor's dtype.

    python scripts/convert_weights.py efficientnet-lite0-57934424.pth lite0.safetensors \
        --model tf_efficientnet_lite0
    python scripts/train.py model.backbone.name=tf_efficientnet_lite0 \
        model.backbone.pretrained_path=lite0.safetensors

The written file loads through ``model.backbone.pretrained_path`` (timm's ``pretrained_cfg_overlay``),
which drops and re-initialises the classifier when ``num_classes`` differs from the file's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from fgzoom.errors import FGZoomError


class WeightsMismatchError(FGZoomError, ValueError):
    """A foreign state dict does not map one for one onto the target model. The message names the first
    mismatch: the index, both names and both shapes."""


def is_matched(tensor: Tensor) -> bool:
    """True for the tensors mapped by order: floating-point ones. Integer counters such as BatchNorm
    ``num_batches_tracked`` are skipped on both sides."""
    return torch.is_floating_point(tensor)


def map_state_dict_by_order(source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename ``source``'s tensors to ``target``'s names by position.

    Args:
        source: the foreign state dict, in its saved order.
        target: the model's ``state_dict()`` (names, shapes and dtypes to produce).

    Returns:
        A dict with exactly ``target``'s keys in ``target``'s order: the k-th floating-point tensor of
        ``source`` (cast to the target's dtype) under the name of the k-th floating-point tensor of
        ``target``; non-floating tensors (``num_batches_tracked``) keep ``target``'s values.

    Raises:
        WeightsMismatchError: the numbers of floating-point tensors differ, or a pair differs in shape;
            the message names the first mismatch (index, both names, both shapes).
    """
    bad = [k for k, v in source.items() if not isinstance(v, Tensor)]
    if bad:
        raise WeightsMismatchError(
            f"source is not a state dict: {len(bad)} entries are not tensors (first {bad[0]!r}); pass the "
            "file of the model's weights, or a checkpoint with a 'state_dict' or 'model' entry"
        )
    src = [(k, v) for k, v in source.items() if is_matched(v)]
    dst = [(k, v) for k, v in target.items() if is_matched(v)]
    # shapes first, over the common length: a wrong tensor early on is a better clue than the count
    for index, ((src_name, src_tensor), (dst_name, dst_tensor)) in enumerate(zip(src, dst, strict=False)):
        if src_tensor.shape != dst_tensor.shape:
            raise WeightsMismatchError(
                f"tensor {index}: source {src_name!r} has shape {tuple(src_tensor.shape)} but the model's "
                f"{dst_name!r} has {tuple(dst_tensor.shape)} ({len(src)} source vs {len(dst)} model "
                "floating-point tensors); the file is not this architecture, or its tensors are in another "
                "order"
            )
    if len(src) != len(dst):
        n = min(len(src), len(dst))
        extra_side, (extra_name, extra_tensor) = ("source", src[n]) if len(src) > n else ("model", dst[n])
        raise WeightsMismatchError(
            f"tensor {n}: the source has {len(src)} floating-point tensors and the model {len(dst)}; the first "
            f"{n} agree in shape, the {extra_side} has {extra_name!r} {tuple(extra_tensor.shape)} left over "
            "(check the model name and --num-classes)"
        )
    pairs = zip(src, dst, strict=True)
    mapped = {dst_name: src_tensor.to(dst_tensor.dtype) for (_, src_tensor), (dst_name, dst_tensor) in pairs}
    return {k: mapped.get(k, v) for k, v in target.items()}


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a .pth/.pt/.bin/.ckpt/.safetensors file, via timm's loader: a checkpoint dict is
    unwrapped (``state_dict_ema``/``model_ema`` first, then ``state_dict``, then ``model``) and DDP/compile
    prefixes are removed. ``torch.load`` runs with ``weights_only=True``."""
    from timm.models import load_state_dict as timm_load_state_dict

    path = Path(path).expanduser()
    if not path.is_file():
        raise FGZoomError(f"{path}: weights file not found")
    try:
        return timm_load_state_dict(str(path), device="cpu", weights_only=True)
    except Exception as e:  # unpickling errors of many kinds
        raise FGZoomError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e


@dataclass(frozen=True)
class ConversionReport:
    """What ``convert_weights`` did: ``mapped`` (source name, model name, shape) per matched tensor, and
    the model's non-floating tensors kept at the model's values (``kept``)."""

    source: str
    destination: str
    model: str
    mapped: list[tuple[str, str, tuple[int, ...]]]
    kept: list[str]

    def summary(self) -> str:
        return (
            f"wrote {self.destination}: {len(self.mapped)} tensors of {self.source} mapped by order onto "
            f"{self.model}; {len(self.kept)} integer buffers (num_batches_tracked) kept from the model"
        )


def convert_weights(
    source: str | Path, destination: str | Path, model_name: str, num_classes: int | None = None
) -> ConversionReport:
    """Map the weights file ``source`` onto ``timm.create_model(model_name)`` by order and save it as
    ``destination`` (.safetensors) under timm's names.

    Args:
        source: the foreign weights file (see ``load_state_dict``).
        destination: the .safetensors file to write (its folder is created).
        model_name: the timm architecture the tensors belong to.
        num_classes: classes of the source's classifier; None = the model's default (1000 for ImageNet).

    The result is loaded back into the model with ``strict=True`` before it is written.
    """
    import safetensors.torch
    import timm

    destination = Path(destination).expanduser()
    if destination.suffix != ".safetensors":
        raise FGZoomError(f"{destination}: the destination must end in .safetensors")
    if model_name not in timm.list_models():
        raise FGZoomError(f"--model {model_name!r}: not a timm model; see timm.list_models()")
    foreign = load_state_dict(source)
    options = {} if num_classes is None else {"num_classes": num_classes}
    model = timm.create_model(model_name, pretrained=False, **options)
    target = model.state_dict()
    state = map_state_dict_by_order(foreign, target)
    model.load_state_dict(state, strict=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage (a source with tied weights)
    safetensors.torch.save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(destination))
    src_names = [k for k, v in foreign.items() if is_matched(v)]
    dst_names = [k for k, v in target.items() if is_matched(v)]
    return ConversionReport(
        source=str(source),
        destination=str(destination),
        model=model_name,
        mapped=[(s, d, tuple(target[d].shape)) for s, d in zip(src_names, dst_names, strict=True)],
        kept=[k for k, v in target.items() if not is_matched(v)],
    )
