"""What every backbone split shares: the interface (``forward_to`` / ``forward_from`` / ``forward_head``), the
stage index and input-size checks, and the one-line error for a model no split handles."""

from __future__ import annotations

from torch import Tensor, nn

from fgzoom.errors import ConfigError

SUPPORTED_FAMILIES = (
    "CNNs with timm feature_info (resnet*, convnext*, efficientnet*, regnet*, ...), the ViT family (vit_*, "
    "deit_*, eva*, vit_*_dinov2*) and Swin (swin_*, swinv2_*)"
)


def unsupported(name: str, model: nn.Module) -> ConfigError:
    """The one line for a model no split handles."""
    return ConfigError(
        f"model.backbone.name={name}: the zoom cannot split {type(model).__name__} models; it splits "
        f"{SUPPORTED_FAMILIES}. Pick one of those, or model=plain for this backbone without zoom"
    )


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


def fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The (H, W) a ViT/Swin built without ``dynamic_img_size`` takes (its ``patch_embed.img_size``); None when
    the model takes any size."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or getattr(model, "dynamic_img_size", False) or not getattr(embed, "strict_img_size", False):
        return None
    return tuple(embed.img_size)


def check_input_size(x: Tensor, name: str, expected: tuple[int, int] | None) -> None:
    """One line instead of timm's assertion when ``x`` is not the size a fixed-size model was built for."""
    if expected is not None and tuple(x.shape[-2:]) != expected:
        raise ConfigError(
            f"model.backbone.img_size={expected[0] if expected[0] == expected[1] else list(expected)}: {name} is "
            f"built for that input size but gets {x.shape[-2]}x{x.shape[-1]} images (data.image_size, or "
            "model.input_size when set); leave model.backbone.img_size at its default ${data.image_size}, or pass "
            "model.backbone.kwargs={dynamic_img_size: true}"
        )


class BackboneSplit(nn.Module):
    """A timm model cut after one of its stages (or transformer blocks): the base of one split per family
    (``StageSplit`` for CNNs, ``ChannelsLastSplit`` for Swin, ``TokenSplit`` for the ViT family).

    ``f, context = forward_to(x)`` gives the grid ``f`` Tensor[B, C, h, w] and what the tail needs besides it;
    ``forward_from(f, context)`` the final features; ``forward_head`` is timm's own.
    ``forward_head(forward_from(*forward_to(x)))`` equals ``model(x)``.

    Attributes set by each family: ``stage`` (the resolved index), ``channels`` and ``reduction`` of the grid.

    Args:
        model: a timm model.
        name: the ``model.backbone.name`` the errors name (default: the model's class name).
    """

    has_class_token = False
    stage: int
    channels: int
    reduction: int

    def __init__(self, model: nn.Module, name: str | None = None) -> None:
        super().__init__()
        self.name = name or type(model).__name__
        self.model = model
        self._compiled: tuple | None = None  # (forward_to, forward_from) runners, set by compile_stages
        self.grad_checkpointing = False
        self._input_size = fixed_input_size(model)

    @property
    def compiled(self) -> bool:
        """Whether ``compile_stages`` has put both sides of the split through ``torch.compile``."""
        return self._compiled is not None

    def forward_to(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Tensor[B, 3, H, W] -> (grid Tensor[B, C, H/r, W/r], context for ``forward_from`` or None)."""
        raise NotImplementedError

    def forward_from(self, f: Tensor, context: Tensor | None = None) -> Tensor:
        """Grid Tensor[B', C, h', w'] (B' a multiple of the batch of ``context``) -> the final features (input
        of ``forward_head``)."""
        raise NotImplementedError

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Final features -> logits Tensor[B, K] (or pooled features with ``pre_logits``)."""
        return self.model.forward_head(features, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_from(*self.forward_to(x)))

    def tail_modules(self) -> list[nn.Module]:
        """The modules ``forward_from`` and ``forward_head`` run (those a feature-level zoomed view passes)."""
        raise NotImplementedError

    def zoom_grid(self, level: str) -> tuple[int, int] | None:
        """The grid a zoomed view must have at ``level`` (``feature``: the stage grid, ``image``: the input
        size), or None when any size runs."""
        return self._input_size if level == "image" else None

    def require_class_attention(self) -> None:
        """Raise ConfigError unless ``forward_from_attention`` can read a class-token attention map."""
        raise ConfigError(
            f"model.zoom.attention=cls: {self.name} has no class token (cls needs a ViT-family backbone with one, "
            "e.g. vit_*, deit_*, vit_*_dinov2); use model.zoom.attention=head or channel_sum"
        )

    def forward_from_attention(self, f: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``forward_from`` and the class token's attention map of the last block (ViT family only)."""
        self.require_class_attention()  # raises for a family without a class token
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward instead of storing them (``model.grad_checkpointing``): timm's own
        switch on the model."""
        self.model.set_grad_checkpointing(enable)
        self.grad_checkpointing = enable

    def compile_stages(self, **options) -> None:
        """Run ``forward_to`` and ``forward_from`` through ``torch.compile`` (``options`` go to it).

        One graph per side of the split (and per train/eval mode and input shape); the crop between them
        stays eager. No module is wrapped, so parameter names and ``state_dict`` keys do not change (no
        ``_orig_mod.`` prefix) and checkpoints load with or without it.
        """
        raise NotImplementedError
