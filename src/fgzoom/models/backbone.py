"""timm backbones: ``model.backbone.*`` and model creation (local weights file, offline hub checks).

The split of a backbone at a feature stage is ``fgzoom.models.backbone_split``.
"""

from __future__ import annotations

import difflib
import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
from timm.data import resolve_data_config
from torch import nn

from fgzoom.errors import ConfigError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# timm.create_model arguments that have their own model.backbone key (or come from the data)
RESERVED_KWARGS = {
    "num_classes": "the data's class count",
    "pretrained": "model.backbone.pretrained",
    "pretrained_cfg_overlay": "model.backbone.pretrained_path",
    "drop_rate": "model.backbone.drop_rate",
    "drop_path_rate": "model.backbone.drop_path_rate",
    "img_size": "model.backbone.img_size",
}


def _as_tuples(value: Any) -> Any:
    """Lists of a config file (at any depth) as tuples, the sequence type timm's arguments expect."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return tuple(_as_tuples(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _as_tuples(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class BackboneConfig:
    """``model.backbone.*``: a timm model name and where its weights come from.

    Attributes:
        name: any ``timm.list_models()`` name.
        pretrained: load pretrained weights (from the local hub cache; no download when offline).
        pretrained_path: a local .safetensors/.pth/.bin weights file; implies pretrained.
        drop_rate: classifier dropout.
        drop_path_rate: stochastic depth.
        img_size: input side the model is built for, passed as timm's ``img_size`` to models with a fixed
            input size (timm's ``fixed_input_size``: ViT, DeiT, EVA, DINOv2, Swin; their position embeddings
            and attention windows are sized for it, pretrained ones resampled); ignored by CNNs. The config
            sets it to ``data.image_size``; ``model.input_size``, when set, takes its place. None = the
            model's default.
        kwargs: further ``timm.create_model`` arguments of the model (e.g. ``{depth: 2, embed_dim: 64}``,
            ``{dynamic_img_size: true}``, ``{reg_tokens: 4}``); lists become tuples. Arguments that have their
            own key above are refused.
    """

    name: str = "resnet18"
    pretrained: bool = False
    pretrained_path: str | None = None
    drop_rate: float = 0.0
    drop_path_rate: float | None = None
    img_size: int | None = None
    kwargs: dict[str, Any] | None = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.img_size is not None and (isinstance(self.img_size, bool) or not isinstance(self.img_size, int)
                                          or self.img_size < 1):
            raise ConfigError(f"model.backbone.img_size={self.img_size!r}: must be a positive integer (pixels) or "
                              "null for the model's default")
        if self.kwargs is None:  # null in a config file
            object.__setattr__(self, "kwargs", {})
        if not isinstance(self.kwargs, Mapping):
            raise ConfigError(f"model.backbone.kwargs={self.kwargs!r}: must be a mapping of timm.create_model "
                              "arguments, e.g. {depth: 2}")
        object.__setattr__(self, "kwargs", _as_tuples(self.kwargs))
        for key in self.kwargs:
            if key in RESERVED_KWARGS:
                raise ConfigError(f"model.backbone.kwargs.{key}: set by {RESERVED_KWARGS[key]}; leave it out of "
                                  "model.backbone.kwargs")
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


def hub_reachable(timeout: float = 3.0) -> bool:
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
        if not _hub_weights_cached(config.name) and not hub_reachable():
            raise ConfigError(
                f"model.backbone.pretrained=true: no cached weights for {config.name!r} and the hub is not "
                "reachable; download them elsewhere and pass model.backbone.pretrained_path=/path/to/weights"
                ".safetensors (or set model.backbone.pretrained=false)"
            )


def backbone_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the timm backbone ``name``: its pretrained config as timm resolves it (timm's ImageNet
    default for a backbone without one)."""
    pretrained = timm.get_pretrained_cfg(name)
    config = resolve_data_config({}, pretrained_cfg=pretrained.to_dict() if pretrained else {"architecture": name})
    return tuple(config["mean"]), tuple(config["std"])


def built_for_one_input_size(name: str) -> bool:
    """Whether timm builds ``name`` for one input size (``pretrained_cfg.fixed_input_size``: ViT, Swin, ...)."""
    cfg = timm.get_pretrained_cfg(name)
    return bool(cfg is not None and cfg.fixed_input_size)


def create_backbone(config: BackboneConfig, num_classes: int, input_size: int | None = None,
                    **kwargs) -> nn.Module:
    """``timm.create_model`` with the classifier sized for ``num_classes``.

    ``config.kwargs`` and ``kwargs`` go to timm. A model with a fixed input size is built for ``input_size``
    (``model.input_size``, the side the backbone sees) or else ``config.img_size``. A local ``pretrained_path``
    is loaded through ``pretrained_cfg_overlay=dict(file=...)`` (timm adapts the classifier when the class
    count differs). ``pretrained=True`` without a local file fails at once when the weights are not cached
    and the hub cannot be reached.
    """
    options: dict = dict(num_classes=num_classes, drop_rate=config.drop_rate, **config.kwargs, **kwargs)
    if config.drop_path_rate is not None:
        options["drop_path_rate"] = config.drop_path_rate
    img_size = input_size if input_size is not None else config.img_size
    if img_size is not None and built_for_one_input_size(config.name):
        options["img_size"] = img_size
    if config.pretrained_path is not None:
        options.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(Path(config.pretrained_path).expanduser())))
    elif config.pretrained:
        check_pretrained_available(config)
        options["pretrained"] = True
    try:
        return timm.create_model(config.name, **options)
    except TypeError as e:  # an argument the model's constructor does not take
        given = [f"model.backbone.kwargs={dict(config.kwargs)}"] if config.kwargs else []
        given += ["model.backbone.img_size"] if "img_size" in options else []
        if not given:
            raise
        raise ConfigError(
            f"{' / '.join(given)}: not accepted by {config.name!r} ({str(e).splitlines()[0][:200]})"
        ) from e
    except (RuntimeError, OSError, KeyError) as e:
        if config.pretrained_path is not None:
            raise ConfigError(
                f"model.backbone.pretrained_path={config.pretrained_path}: cannot load into {config.name!r} "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from e
        raise
