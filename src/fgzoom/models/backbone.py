"""timm backbones: creation (local weights, offline checks) and the split at a feature stage.

``BackboneSplit`` runs a timm CNN up to the output of ``feature_info[stage]`` (``forward_to``), and from
there through the rest of ``forward_features`` (``forward_from``); ``forward_head`` is timm's own.
For a resnet, stage 0 is act1, 1 layer1, ..., 4 layer4; negative stages count from the end.
"""

from __future__ import annotations

import difflib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from fgzoom.errors import ConfigError

log = logging.getLogger(__name__)

HEAD_MODULES = {"global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "pre_logits", "flatten"}
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


@dataclass(frozen=True)
class BackboneConfig:
    """``model.backbone.*``: a timm model name and where its weights come from.

    Attributes:
        name: any ``timm.list_models()`` name.
        pretrained: load pretrained weights (from the local hub cache; no download when offline).
        pretrained_path: a local .safetensors/.pth/.bin weights file; implies pretrained.
        drop_rate: classifier dropout.
        drop_path_rate: stochastic depth.
    """

    name: str = "resnet18"
    pretrained: bool = False
    pretrained_path: str | None = None
    drop_rate: float = 0.0
    drop_path_rate: float | None = None

    def __post_init__(self) -> None:
        if self.name not in timm.list_models():
            close = difflib.get_close_matches(self.name, timm.list_models(), n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
            raise ConfigError(f"model.backbone.name={self.name!r}: not a timm model{hint}")
        if self.pretrained_path is not None:
            path = Path(self.pretrained_path).expanduser()
            if not path.is_file():
                raise ConfigError(f"model.backbone.pretrained_path={self.pretrained_path}: file not found")
            if path.suffix not in WEIGHT_SUFFIXES:
                raise ConfigError(
                    f"model.backbone.pretrained_path={self.pretrained_path}: expected one of {WEIGHT_SUFFIXES}"
                )


def _hub_weights_cached(name: str) -> bool:
    """True when timm's pretrained weights for ``name`` are already in the local Hugging Face cache."""
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return False
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", cfg.hf_hub_filename):
        if filename and isinstance(try_to_load_from_cache(cfg.hf_hub_id, filename), str):
            return True
    return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """False at once under ``HF_HUB_OFFLINE=1``; else whether huggingface.co answers within ``timeout``."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def check_pretrained_available(config: BackboneConfig) -> None:
    """For ``pretrained=true`` without a local file: raise at once (no download retries) when the weights
    are neither in the local cache nor reachable on the hub."""
    if config.pretrained and config.pretrained_path is None:
        if not _hub_weights_cached(config.name) and not _hub_reachable():
            raise ConfigError(
                f"model.backbone.pretrained=true: no cached weights for {config.name!r} and the hub is not "
                "reachable; download them elsewhere and pass model.backbone.pretrained_path=/path/to/weights"
                ".safetensors (or set model.backbone.pretrained=false)"
            )


def create_backbone(config: BackboneConfig, num_classes: int, **kwargs) -> nn.Module:
    """``timm.create_model`` with the classifier sized for ``num_classes``.

    A local ``pretrained_path`` is loaded through ``pretrained_cfg_overlay=dict(file=...)`` (timm adapts
    the classifier when the class count differs). ``pretrained=True`` without a local file fails at once
    when the weights are not cached and the hub cannot be reached.
    """
    options: dict = dict(num_classes=num_classes, drop_rate=config.drop_rate, **kwargs)
    if config.drop_path_rate is not None:
        options["drop_path_rate"] = config.drop_path_rate
    if config.pretrained_path is not None:
        options.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(Path(config.pretrained_path).expanduser())))
    elif config.pretrained:
        check_pretrained_available(config)
        options["pretrained"] = True
    try:
        return timm.create_model(config.name, **options)
    except (RuntimeError, OSError, KeyError) as e:
        if config.pretrained_path is not None:
            raise ConfigError(
                f"model.backbone.pretrained_path={config.pretrained_path}: cannot load into {config.name!r} "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from e
        raise


def _ordered_modules(model: nn.Module, feature_modules: list[str]) -> list[tuple[str, nn.Module]]:
    """Top-level children in execution order, expanding a container when a feature module is inside it
    (``stages.0``), so every ``feature_info`` module is one entry."""
    nested = {m.split(".")[0] for m in feature_modules if "." in m}
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name in nested:
            out += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            out.append((name, child))
    return out


def _run_stages(modules: dict[str, nn.Module], names: tuple[str, ...], x: Tensor) -> Tensor:
    """Run ``modules[name]`` for each of ``names`` in order. Module-level functions (this and the two
    below), so that their compiled forms hold no reference to one network: a deep copy runs its own."""
    for name in names:
        x = modules[name](x)
    return x


def _run_to(modules: dict[str, nn.Module], names: tuple[str, ...], x: Tensor) -> Tensor:
    return _run_stages(modules, names, x)


def _run_from(modules: dict[str, nn.Module], names: tuple[str, ...], x: Tensor) -> Tensor:
    # a second code object: torch.compile keeps one cache (and recompile limit) per code object
    return _run_stages(modules, names, x)


def resolve_stage(stage: int, num_stages: int, name: str, need_after: bool) -> int:
    """Turn a possibly negative ``model.zoom.stage`` into an index, or raise ConfigError."""
    index = stage + num_stages if stage < 0 else stage
    last_allowed = num_stages - 2 if need_after else num_stages - 1
    if not 0 <= index <= last_allowed:
        lo, hi = -num_stages, last_allowed
        why = " (level=feature needs a later stage to run on the zoomed view)" if need_after else ""
        raise ConfigError(
            f"model.zoom.stage={stage}: {name} has {num_stages} stages; allowed {lo}..{hi}{why}"
        )
    return index


class BackboneSplit(nn.Module):
    """A timm CNN cut after feature stage ``stage``.

    ``model.forward_head(forward_from(forward_to(x)))`` equals ``model(x)``.

    Args:
        model: a timm model with ``feature_info`` and ``forward_head``.
        stage: index into ``model.feature_info`` (negative counts from the end).
        need_after: require at least one stage after ``stage`` (feature-level zoom).
    """

    def __init__(self, model: nn.Module, stage: int, need_after: bool = True) -> None:
        super().__init__()
        info = getattr(model, "feature_info", None)
        if not info or not hasattr(model, "forward_head"):
            raise ConfigError(
                f"model.backbone.name={type(model).__name__}: no timm feature_info/forward_head; "
                "use a CNN family such as resnet, convnext, efficientnet or regnet"
            )
        modules = [i["module"] for i in info]
        self.stage = resolve_stage(stage, len(modules), type(model).__name__, need_after)
        self.channels = info[self.stage]["num_chs"]
        self.reduction = info[self.stage]["reduction"]
        ordered = _ordered_modules(model, modules)
        names = [n for n, _ in ordered]
        split_at = names.index(modules[self.stage]) + 1
        self.model = model
        self.before = tuple(names[:split_at])
        self.after = tuple(n for n in names[split_at:] if n.split(".")[0] not in HEAD_MODULES)
        self._modules_by_name = dict(ordered)
        self._compiled: tuple | None = None  # (forward_to, forward_from) runners, set by compile_stages
        self.num_features = model.num_features

    def forward_to(self, x: Tensor) -> Tensor:
        """Tensor[B, 3, H, W] -> stage features Tensor[B, C, H/r, W/r]."""
        run = _run_stages if self._compiled is None else self._compiled[0]
        return run(self._modules_by_name, self.before, x)

    def forward_from(self, f: Tensor) -> Tensor:
        """Stage features -> the final feature map (input of ``forward_head``)."""
        run = _run_stages if self._compiled is None else self._compiled[1]
        return run(self._modules_by_name, self.after, f)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Final feature map -> logits Tensor[B, K] (or pooled features with ``pre_logits``)."""
        return self.model.forward_head(features, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_from(self.forward_to(x)))

    def compile_stages(self, **options) -> None:
        """Run ``forward_to`` and ``forward_from`` through ``torch.compile`` (``options`` go to it).

        One graph per side of the split (and per train/eval mode and input shape); the crop between them
        stays eager. No module is wrapped, so parameter names and ``state_dict`` keys do not change (no
        ``_orig_mod.`` prefix) and checkpoints load with or without it.
        """
        self._compiled = (torch.compile(_run_to, **options), torch.compile(_run_from, **options))


@torch.no_grad()
def check_split(split: BackboneSplit, image_size: int = 64) -> float:
    """Max abs difference between the split forward and ``model(x)`` in eval mode (for tests)."""
    was = split.training
    split.eval()
    x = torch.randn(2, 3, image_size, image_size)
    diff = (split(x) - split.model(x)).abs().max().item()
    split.train(was)
    return diff
