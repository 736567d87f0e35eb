"""Optimizer factory: timm's ``create_optimizer_v2`` with a learning-rate multiplier for the new layers.

When fine-tuning, the pretrained backbone trains at the base ``lr`` and the layers that did not come from
the weights file train at ``lr * lr_mult_new`` (``model.optimizer.lr_mult_new``; 1.0 = no difference, 10 is
common FGVC practice). "New" is decided from the network's structure (``new_parameter_names``):

- every parameter outside the timm model(s) the network holds (the zoom model's attention head and BAP
  classifier, anything added later), and
- the timm model's classifier (``get_classifier()``), unless its class count equals the one of the model's
  pretrained weights (``pretrained_cfg["num_classes"]``): timm loads the classifier only then, and drops
  and re-initialises it otherwise (the usual FGVC case).

Layer-wise learning-rate decay (``model.optimizer.layer_decay``, timm's ``param_groups_layer_decay``):
the pretrained parameters of each timm model get ``lr_scale = layer_decay ** (L - 1 - layer)``, layers
numbered by timm's ``group_matcher`` (stem 0, each block or stage, the head last), so the stem learns slowest;
the new layers keep ``lr_scale = lr_mult_new`` (they sit above the top of the network).

The rule is structural, so it applies with and without pretrained weights; from scratch a multiplier
just gives the head a larger learning rate (harmless, pointless): the key is meant for fine-tuning.

Parameter groups: timm's ``param_groups_weight_decay`` (no weight decay on biases, norm weights and every
1-d parameter, plus the timm models' ``no_weight_decay()`` names), each group split into a pretrained part
and a new part, in this order: ``backbone_no_decay``, ``backbone``, ``new_no_decay``, ``new`` (timm's order;
empty groups are dropped; the names show in Lightning's LearningRateMonitor). Every group starts at ``lr``; the
new ones carry ``lr_scale = lr_mult_new``, which timm's schedulers multiply into every lr they set (the
mechanism timm's layer decay uses), so the new layers run at exactly ``lr_mult_new`` times the backbone's
lr at every step, warmup included. Without a scheduler, ``apply_lr_scale`` applies it once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from torch import nn
from torch.optim import Optimizer

from fgzoom.errors import ConfigError

UNSUPPORTED = ("param_group_fn",)
# the recipe's defaults for ``lr: null`` and ``lr_mult_new: null``, measured in docs/results.md, "The training recipe against a plain loop"
# (from ImageNet weights 2e-3 beat 1e-3 on both measured datasets; kept separate so photographs can differ)
LR_SCRATCH, LR_PRETRAINED = 2e-3, 2e-3
LR_MULT_NEW_PRETRAINED = 10.0
# the recipe's (beta1, beta2) for ``betas: null`` with AdamW/Adam when fine-tuning (docs/recipes.md, "The training recipe"):
# beta1 0.85, where a one-cycle schedule puts Adam's momentum at peak lr, closed the plain model's gap to the
# reference loop from ImageNet weights; from scratch it cost `fine_detail` two of three seeds, so training from
# scratch (and every other optimizer) keeps the optimizer's own default (0.9, 0.999)
RECIPE_BETAS_PRETRAINED = (0.85, 0.999)
RECIPE_BETAS_OPTS = ("adam", "adamw")


def loads_pretrained_weights(model: nn.Module) -> bool:
    """Whether ``model`` (an FGVCModule) starts from pretrained weights: ``model.backbone.pretrained`` or
    ``pretrained_path`` in its hyperparameters. A bare network counts as trained from scratch."""
    backbone = (getattr(model, "hparams", None) or {}).get("backbone") or {}
    return bool(backbone.get("pretrained") or backbone.get("pretrained_path"))


def recipe_defaults(
    model: nn.Module, lr: float | None, lr_mult_new: float | None, opt: str = "adamw",
    betas: Sequence[float] | None = None,
) -> tuple[float, float, Sequence[float] | None]:
    """``(lr, lr_mult_new, betas)`` with each null filled in: from scratch ``2e-3``, ``1`` and the optimizer's
    own betas (None); with pretrained weights ``2e-3`` for the backbone, ``10`` for the new layers (FGVC
    fine-tuning practice) and, for ``adam``/``adamw``, ``RECIPE_BETAS_PRETRAINED``."""
    pretrained = loads_pretrained_weights(model)
    if lr is None:
        lr = LR_PRETRAINED if pretrained else LR_SCRATCH
    if lr_mult_new is None:
        lr_mult_new = LR_MULT_NEW_PRETRAINED if pretrained else 1.0
    if betas is None and pretrained and opt.lower() in RECIPE_BETAS_OPTS:
        betas = RECIPE_BETAS_PRETRAINED
    return float(lr), float(lr_mult_new), betas


def timm_models(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost timm models inside ``net`` (modules with ``pretrained_cfg`` and ``get_classifier``),
    as (qualified name, module); ``net`` itself counts."""
    def inside(name: str, prefix: str) -> bool:
        return prefix == "" or name == prefix or name.startswith(prefix + ".")

    found: list[tuple[str, nn.Module]] = []
    for name, module in net.named_modules():
        if any(inside(name, prefix) for prefix, _ in found):
            continue
        if hasattr(module, "pretrained_cfg") and hasattr(module, "get_classifier"):
            found.append((name, module))
    return found


def _classifier_is_loaded(model: nn.Module) -> bool:
    """timm's rule in ``load_pretrained``: the classifier is kept only when the class counts agree."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("num_classes") is not None and cfg.get("num_classes") == getattr(model, "num_classes", None)


def new_parameter_names(net: nn.Module) -> set[str]:
    """Names (as in ``net.named_parameters()``) of the parameters that do not come from pretrained weights:
    everything outside the timm model(s) in ``net``, and their classifiers unless timm loads them (see the
    module docstring).

    Raises:
        ConfigError: ``net`` holds no timm model, so new layers cannot be told from pretrained ones.
    """
    models = timm_models(net)
    if not models:
        raise ConfigError(
            f"model.optimizer.lr_mult_new: found no timm model in {type(net).__name__}, so the new layers "
            "cannot be told from the pretrained ones; set model.optimizer.lr_mult_new=1.0"
        )
    pretrained: set[int] = set()
    for _, model in models:
        classifier = model.get_classifier()
        head = set() if _classifier_is_loaded(model) or not isinstance(classifier, nn.Module) else {
            id(p) for p in classifier.parameters()
        }
        pretrained |= {id(p) for p in model.parameters() if id(p) not in head}
    return {name for name, p in net.named_parameters() if id(p) not in pretrained}


def _no_weight_decay(net: nn.Module) -> set[str]:
    """``no_weight_decay()`` names of ``net`` and of the timm models inside it, qualified from ``net``."""
    names: set[str] = set(getattr(net, "no_weight_decay", lambda: set())())
    for prefix, model in timm_models(net):
        if prefix and hasattr(model, "no_weight_decay"):
            names |= {f"{prefix}.{n}" for n in model.no_weight_decay()}
    return names


def layer_scales(net: nn.Module, layer_decay: float) -> dict[int, float]:
    """``id(parameter) -> lr_scale`` for the parameters of every timm model in ``net``, as timm's
    ``param_groups_layer_decay`` assigns them (layers by the model's ``group_matcher``; the top layer at 1)."""
    if not 0.0 < layer_decay <= 1.0:
        raise ConfigError(f"model.optimizer.layer_decay={layer_decay}: must be in (0, 1] (e.g. 0.75), or null for none")
    models = timm_models(net)
    if not models:
        raise ConfigError(f"model.optimizer.layer_decay: found no timm model in {type(net).__name__} whose layers "
                          "could be numbered; set model.optimizer.layer_decay=null")
    return {
        id(param): float(group["lr_scale"])
        for _, model in models
        for group in param_groups_layer_decay(model, weight_decay=0.0, layer_decay=layer_decay)
        for param in group["params"]
    }


def _depth(scale: float, layer_decay: float) -> int:
    """Layers below the top that ``scale = layer_decay ** depth`` stands for (for the group's name)."""
    return 0 if layer_decay == 1.0 or scale >= 1.0 else round(math.log(scale) / math.log(layer_decay))


def param_groups(
    net: nn.Module,
    weight_decay: float,
    lr_mult_new: float = 1.0,
    filter_bias_and_bn: bool = True,
    fallback_list: tuple[str, ...] = (),
    fallback_no_weight_decay: bool = False,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """timm's weight-decay groups of ``net``, each split into its pretrained and new parameters and, with
    ``layer_decay``, the pretrained ones further by layer.

    Returns:
        Groups ``{"params", "weight_decay", "name"[, "lr_scale"][, "use_fallback"]}`` in the order
        backbone_no_decay, backbone, new_no_decay, new (empty ones dropped); the new ones have
        ``lr_scale = lr_mult_new``. With ``layer_decay`` the backbone groups are per layer, named
        ``backbone_depth<d>[_no_decay]`` with ``lr_scale = layer_decay ** d`` (``d`` layers below the top),
        stem first. With ``lr_mult_new == 1`` and no ``layer_decay`` no timm model is needed and every
        parameter counts as backbone.
    """
    if not lr_mult_new > 0:
        raise ConfigError(f"model.optimizer.lr_mult_new={lr_mult_new}: must be > 0 (1.0 = same lr as the backbone)")
    scales = layer_scales(net, float(layer_decay)) if layer_decay is not None else {}
    new_names = new_parameter_names(net) if lr_mult_new != 1.0 or scales else set()
    new_ids = {id(p) for name, p in net.named_parameters() if name in new_names}
    timm_groups = param_groups_weight_decay(
        net,
        weight_decay=weight_decay,
        weight_decay_exclude_1d=filter_bias_and_bn,
        no_weight_decay_list=_no_weight_decay(net),
        fallback_list=fallback_list,
        fallback_no_weight_decay=fallback_no_weight_decay,
    )
    out: dict[tuple[bool, bool, int, bool], dict[str, Any]] = {}
    for group in timm_groups:
        decays = group["weight_decay"] > 0
        fallback = group.get("use_fallback", False)
        for param in group["params"]:
            is_new = id(param) in new_ids
            scale = float(lr_mult_new) if is_new else scales.get(id(param))
            depth = 0 if is_new or scale is None else _depth(scale, float(layer_decay))
            key = (is_new, fallback, -depth, decays)
            if key not in out:
                part = "new" if is_new else ("backbone" if scale is None else f"backbone_depth{depth}")
                name = part + ("" if decays else "_no_decay") + ("_fallback" if fallback else "")
                out[key] = {**{k: v for k, v in group.items() if k != "params"}, "params": [], "name": name}
                if scale is not None:
                    out[key]["lr_scale"] = scale
            out[key]["params"].append(param)
    # timm's order within each part (no_decay, decay, then the fallback ones): with lr_mult_new=1 the groups
    # are the ones create_optimizer_v2 builds for the module, so older checkpoints resume
    return [out[k] for k in sorted(out)]


def create_optimizer(
    model: nn.Module,
    opt: str = "adamw",
    lr: float | None = None,
    weight_decay: float = 0.0,
    lr_mult_new: float | None = None,
    filter_bias_and_bn: bool = True,
    fallback_list: tuple[str, ...] = (),
    fallback_no_weight_decay: bool = False,
    layer_decay: float | None = None,
    betas: tuple[float, float] | None = None,
    **kwargs: Any,
) -> Optimizer:
    """``timm.optim.create_optimizer_v2`` on ``param_groups(model, ...)``: the same optimizer and
    weight-decay exclusions timm builds for a module, with the new layers' groups at ``lr_scale =
    lr_mult_new`` (see the module docstring).

    Args:
        model: the network or the LightningModule holding it (``model.optimizer`` is a partial called with
            the LightningModule).
        opt, lr, weight_decay, filter_bias_and_bn, fallback_list, fallback_no_weight_decay, kwargs: as in
            ``create_optimizer_v2`` (``momentum``, ``betas``, ``eps``, ``foreach``, ...).
        lr_mult_new: learning-rate multiplier of the new layers; 1.0 = none.
        layer_decay: layer-wise learning-rate decay of the pretrained layers (timm's; e.g. 0.75); None = none.
        betas: Adam's ``(beta1, beta2)`` (a value given to an optimizer without betas is its error).
        lr, lr_mult_new, betas: None takes the recipe's default for how the backbone starts (:func:`recipe_defaults`).
    """
    lr, lr_mult_new, betas = recipe_defaults(model, lr, lr_mult_new, opt, betas)
    if betas is not None:
        if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
            raise ConfigError(f"model.optimizer.betas={list(betas)}: must be two numbers in [0, 1), e.g. [0.85, 0.999]")
        kwargs["betas"] = tuple(float(b) for b in betas)
    for key in UNSUPPORTED:
        if kwargs.get(key) is not None:
            raise ConfigError(f"model.optimizer.{key}={kwargs[key]!r}: not supported by "
                              "fgzoom.models.optim.create_optimizer yet; remove the key (or set it to null)")
        kwargs.pop(key, None)
    groups = param_groups(model, weight_decay, lr_mult_new, filter_bias_and_bn, tuple(fallback_list),
                          fallback_no_weight_decay, layer_decay)
    return create_optimizer_v2(groups, opt=opt, lr=lr, weight_decay=0.0, **kwargs)


def apply_lr_scale(optimizer: Optimizer) -> None:
    """Multiply each group's ``lr`` by its ``lr_scale`` once (and drop the key), for training without a timm
    scheduler, which would otherwise apply it at every update (no scheduler, or torch's ``one_cycle``)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.pop("lr_scale", 1.0)
