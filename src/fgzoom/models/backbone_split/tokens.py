"""The ViT family (timm ``VisionTransformer`` and ``Eva``: vit_*, deit_*, eva*, vit_*_dinov2) cut after a
transformer block; the patch tokens are the grid, the prefix tokens the context."""

from __future__ import annotations

import torch
from timm.layers import Attention
from timm.models.eva import Eva, EvaAttention
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from fgzoom.errors import ConfigError
from fgzoom.models.attention import class_token_attention
from fgzoom.models.backbone_split.base import BackboneSplit, check_input_size, resolve_stage

CLASS_ATTENTION_LAYERS = (Attention, EvaAttention)


def _eva_rope(model: nn.Module, grid: tuple[int, int]) -> Tensor | None:
    """The rotary embedding an ``Eva`` model's blocks take for a ``grid`` of patch tokens, as its own
    ``_pos_embed`` builds it (None without rope)."""
    rope = getattr(model, "rope", None)
    if rope is None:
        return None
    if getattr(model, "dynamic_img_size", False) or getattr(rope, "feat_shape", None) is None:
        return rope.get_embed(shape=list(grid))
    return rope.get_embed()


def _run_blocks(model: nn.Module, start: int, tokens: Tensor, rope: Tensor | None) -> tuple[Tensor, Tensor]:
    """Blocks ``start``.. of a ViT/EVA and its final norm on ``tokens`` Tensor[B, N, C]; returns the final
    tokens and the last block's input."""
    last_input = tokens
    checkpointing = model.grad_checkpointing and torch.is_grad_enabled()
    mixed = getattr(model, "rope_mixed", False)
    for i in range(start, len(model.blocks)):
        block = model.blocks[i]
        last_input = tokens
        extra = {} if rope is None else {"rope": rope[i] if mixed else rope}
        if checkpointing:
            tokens = checkpoint(block, tokens, use_reentrant=False, **extra)
        else:
            tokens = block(tokens, **extra)
    return model.norm(tokens), last_input


def _tokens_to(model: nn.Module, stage: int, prefix: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
    out = model.forward_intermediates(
        x, indices=[stage], return_prefix_tokens=prefix > 0, norm=False, stop_early=True, output_fmt="NCHW",
        intermediates_only=True,
    )[0]
    return out if prefix > 0 else (out, None)


def _tokens_from(model: nn.Module, start: int, tokens: Tensor, rope: Tensor | None) -> tuple[Tensor, Tensor]:
    return _run_blocks(model, start, tokens, rope)


class TokenSplit(BackboneSplit):
    """A ViT-family model (timm ``VisionTransformer`` or ``Eva``) cut after block ``stage``.

    ``forward_to`` runs timm's ``forward_intermediates`` up to the block and returns the patch tokens as a grid
    Tensor[B, C, h, w] with the prefix tokens Tensor[B, P, C] as context (None when P = 0); ``forward_from``
    re-attaches them (each repeated for the k views of its sample when the grid batch is B*k) and runs the
    remaining blocks and the final norm; ``forward_head`` is timm's (class token or average pooling, head).
    """

    def __init__(self, model: nn.Module, stage: int, need_after: bool = True, name: str | None = None) -> None:
        super().__init__(model, name)
        if isinstance(getattr(model, "patch_drop", None), nn.Module) and not isinstance(model.patch_drop, nn.Identity):
            raise ConfigError(
                f"model.backbone.kwargs.patch_drop_rate: {self.name} drops patch tokens, so they no longer form a "
                "grid to crop; leave patch_drop_rate at 0 for the zoom"
            )
        self.stage = resolve_stage(stage, len(model.blocks), self.name, need_after)
        self.channels = model.feature_info[self.stage]["num_chs"]
        self.reduction = model.feature_info[self.stage]["reduction"]
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.has_class_token = getattr(model, "cls_token", None) is not None

    def _rope(self, grid: tuple[int, int]) -> Tensor | None:
        return _eva_rope(self.model, grid) if isinstance(self.model, Eva) else None

    def forward_to(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Tensor[B, 3, H, W] -> (patch tokens after block ``stage`` as Tensor[B, C, H/p, W/p], prefix tokens
        Tensor[B, P, C] or None)."""
        check_input_size(x, self.name, self._input_size)
        run = _tokens_to if self._compiled is None else self._compiled[0]
        return run(self.model, self.stage, self.num_prefix_tokens, x)

    def _tail(self, f: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        b, c, h, w = f.shape
        tokens = f.flatten(2).transpose(1, 2)  # [B', h*w, C]
        if context is not None:
            if context.shape[0] != b:  # k zoomed views per sample, sample-major
                context = context.repeat_interleave(b // context.shape[0], dim=0)
            tokens = torch.cat([context.to(tokens.dtype), tokens], dim=1)  # [B', P + h*w, C]
        run = _tokens_from if self._compiled is None else self._compiled[1]
        return run(self.model, self.stage + 1, tokens, self._rope((h, w)))

    def forward_from(self, f: Tensor, context: Tensor | None = None) -> Tensor:
        """Patch grid Tensor[B', C, h', w'] and the prefix tokens of ``forward_to`` -> the final tokens
        Tensor[B', P + h'*w', C] (input of ``forward_head``)."""
        return self._tail(f, context)[0]

    def tail_modules(self) -> list[nn.Module]:
        return [self.model]  # the blocks after the cut share the model's containers; ViTs hold no BatchNorm

    def forward_from_attention(self, f: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``forward_from`` and the last block's class-token attention to the patch tokens, averaged over heads:
        Tensor[B', 1, h', w'] (``class_token_attention`` on that block's input)."""
        final, last_input = self._tail(f, context)
        grid = (f.shape[-2], f.shape[-1])
        rope = self._rope(grid)
        if rope is not None and getattr(self.model, "rope_mixed", False):
            rope = rope[len(self.model.blocks) - 1]
        block = self.model.blocks[-1]
        return final, class_token_attention(last_input, block, self.num_prefix_tokens, grid, rope)

    def require_class_attention(self) -> None:
        if not self.has_class_token:
            raise ConfigError(
                f"model.zoom.attention=cls: {self.name} has no class token; use model.zoom.attention=head or "
                "channel_sum"
            )
        attn = self.model.blocks[-1].attn
        if not isinstance(attn, CLASS_ATTENTION_LAYERS):
            raise ConfigError(
                f"model.zoom.attention=cls: the attention of {self.name}'s blocks ({type(attn).__name__}) is not "
                "one cls reads (timm Attention, EvaAttention); use model.zoom.attention=head or channel_sum"
            )
        if self.stage >= len(self.model.blocks) - 1:
            raise ConfigError(
                f"model.zoom.stage={self.stage}: attention=cls reads the last block, so the split must come before "
                f"it (model.zoom.stage <= {len(self.model.blocks) - 2}, e.g. -2)"
            )

    def zoom_grid(self, level: str) -> tuple[int, int] | None:
        if level == "image" or self._input_size is None:
            return self._input_size
        if isinstance(self.model, Eva) and getattr(self.model, "rope", None) is not None:
            return tuple(self.model.patch_embed.grid_size)  # rope built for the patch grid of img_size
        return None

    def compile_stages(self, **options) -> None:
        self._compiled = (torch.compile(_tokens_to, **options), torch.compile(_tokens_from, **options))
