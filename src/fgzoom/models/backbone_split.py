"""The backbone split: a timm model cut after one of its ``feature_info`` stages (or transformer blocks).

``split_backbone`` picks the split for the model's family:

* CNNs (resnet, convnext, efficientnet, regnet, ...; stages in NCHW): ``BackboneSplit`` runs the model's
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

import torch
from timm.layers import Attention
from timm.models.eva import Eva, EvaAttention
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from fgzoom.errors import ConfigError
from fgzoom.models.attention import class_token_attention
from fgzoom.models.branch_norm import recompute_context

HEAD_MODULES = {"global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "pre_logits", "flatten"}
SUPPORTED_FAMILIES = (
    "CNNs with timm feature_info (resnet*, convnext*, efficientnet*, regnet*, ...), the ViT family (vit_*, "
    "deit_*, eva*, vit_*_dinov2*) and Swin (swin_*, swinv2_*)"
)
TOKEN_MODELS = (VisionTransformer, Eva)
CHANNELS_LAST_MODELS = (SwinTransformer, SwinTransformerV2)
CLASS_ATTENTION_LAYERS = (Attention, EvaAttention)


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


def unsupported(name: str, model: nn.Module) -> ConfigError:
    """The one line for a model no split handles."""
    return ConfigError(
        f"model.backbone.name={name}: the zoom cannot split {type(model).__name__} models; it splits "
        f"{SUPPORTED_FAMILIES}. Pick one of those, or model=plain for this backbone without zoom"
    )


def split_backbone(model: nn.Module, stage: int, need_after: bool = True, name: str | None = None) -> BackboneSplit:
    """The split of ``model`` for its family (``BackboneSplit``, ``ChannelsLastSplit`` or ``TokenSplit``).

    Args:
        model: a timm model.
        stage: ``model.zoom.stage``, an index into the model's ``feature_info`` (negative counts from the end).
        need_after: require at least one stage after ``stage`` (feature-level zoom).
        name: the ``model.backbone.name`` the errors name (default: the model's class name).

    Raises:
        ConfigError: the family cannot be split, or ``stage`` is out of range.
    """
    family = split_family(model)
    cls = {"cnn": BackboneSplit, "channels_last": ChannelsLastSplit, "tokens": TokenSplit}.get(family)
    if cls is None:
        raise unsupported(name or type(model).__name__, model)
    return cls(model, stage, need_after, name)


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


def _run_stages(modules: dict[str, nn.Module], names: tuple[str, ...], x: Tensor,
                checkpointed: frozenset[str] = frozenset()) -> Tensor:
    """Run ``modules[name]`` for each of ``names`` in order, those in ``checkpointed`` (with gradients on) through
    ``torch.utils.checkpoint`` (activations recomputed in backward). Module-level functions (this and the ones
    below), so that their compiled forms hold no reference to one network: a deep copy runs its own."""
    for name in names:
        if name in checkpointed and torch.is_grad_enabled():
            # recomputed in backward with the BatchNorm statistics of its forward (fgzoom.models.branch_norm)
            x = checkpoint(modules[name], x, use_reentrant=False, context_fn=recompute_context)
        else:
            x = modules[name](x)
    return x


def _run_to(modules: dict[str, nn.Module], names: tuple[str, ...], x: Tensor,
            checkpointed: frozenset[str] = frozenset()) -> Tensor:
    return _run_stages(modules, names, x, checkpointed)


def _run_from(modules: dict[str, nn.Module], names: tuple[str, ...], x: Tensor,
              checkpointed: frozenset[str] = frozenset()) -> Tensor:
    # a second code object: torch.compile keeps one cache (and recompile limit) per code object
    return _run_stages(modules, names, x, checkpointed)


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
    """A timm CNN cut after feature stage ``stage`` (see ``split_backbone`` for the other families).

    ``model.forward_head(forward_from(*forward_to(x)))`` equals ``model(x)``.

    Args:
        model: a timm model with ``feature_info`` and ``forward_head``.
        stage: index into ``model.feature_info`` (negative counts from the end).
        need_after: require at least one stage after ``stage`` (feature-level zoom).
        name: the ``model.backbone.name`` the errors name (default: the model's class name).
    """

    has_class_token = False

    def __init__(self, model: nn.Module, stage: int, need_after: bool = True, name: str | None = None) -> None:
        super().__init__()
        self.name = name or type(model).__name__
        self.model = model
        self._compiled: tuple | None = None  # (forward_to, forward_from) runners, set by compile_stages
        self.grad_checkpointing = False
        self._checkpointed: frozenset[str] = frozenset()  # stage modules run through checkpoint (set_grad_checkpointing)
        self._input_size = fixed_input_size(model)
        self._setup(stage, need_after)

    def _setup(self, stage: int, need_after: bool) -> None:
        model = self.model
        if split_family(model) not in ("cnn", "channels_last"):
            raise unsupported(self.name, model)
        modules = [i["module"] for i in model.feature_info]
        self.stage = resolve_stage(stage, len(modules), self.name, need_after)
        self.channels = model.feature_info[self.stage]["num_chs"]
        self.reduction = model.feature_info[self.stage]["reduction"]
        ordered = _ordered_modules(model, modules)
        names = [n for n, _ in ordered]
        if modules[self.stage] not in names:
            raise unsupported(self.name, model)
        split_at = names.index(modules[self.stage]) + 1
        self.before = tuple(names[:split_at])
        self.after = tuple(n for n in names[split_at:] if n.split(".")[0] not in HEAD_MODULES)
        self._modules_by_name = dict(ordered)
        if split_family(model) == "cnn":
            self._probe()

    def _probe(self) -> None:
        """Run the split once on one zero image of the model's default input size (eval mode, no grad; no random
        draw, no statistics updated) and raise the one-line ``unsupported`` error when it does not give NCHW stage
        features and the model's logits: timm models with ``feature_info`` whose stages are token sequences or
        whose forward is more than its stages in order (MLP-Mixer, LeViT, CrossViT, CoaT) fail here, at build time,
        not deep inside the first training step."""
        size = (self.model.pretrained_cfg or {}).get("input_size", (3, 224, 224))
        x = torch.zeros(1, *size)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                f, context = self.forward_to(x)
                logits = self.forward_head(self.forward_from(f, context))
                expected = self.model(x)
            if logits.shape != expected.shape:
                raise ValueError(f"split logits {tuple(logits.shape)} vs model {tuple(expected.shape)}")
        except ConfigError:
            raise
        except Exception as e:  # whatever the model's own code raises on a cut it was not built for
            raise unsupported(self.name, self.model) from e
        finally:
            self.model.train(was_training)

    def forward_to(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Tensor[B, 3, H, W] -> (stage features Tensor[B, C, H/r, W/r], context). The context is what
        ``forward_from`` needs besides the features: None for CNNs."""
        run = _run_stages if self._compiled is None else self._compiled[0]
        f = run(self._modules_by_name, self.before, x, self._checkpointed)
        if f.ndim != 4 or f.shape[1] != self.channels:  # a family whose stages are not NCHW feature maps
            raise unsupported(self.name, self.model)
        return f, None

    def forward_from(self, f: Tensor, context: Tensor | None = None) -> Tensor:
        """Stage features Tensor[B', C, h', w'] (B' a multiple of the batch of ``context``) -> the final
        features (input of ``forward_head``)."""
        run = _run_stages if self._compiled is None else self._compiled[1]
        return run(self._modules_by_name, self.after, f, self._checkpointed)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Final features -> logits Tensor[B, K] (or pooled features with ``pre_logits``)."""
        return self.model.forward_head(features, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_from(*self.forward_to(x)))

    def tail_modules(self) -> list[nn.Module]:
        """The modules ``forward_from`` and ``forward_head`` run (those a feature-level zoomed view passes)."""
        head = [child for name, child in self.model.named_children() if name in HEAD_MODULES]
        return [self._modules_by_name[n] for n in self.after] + head

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
        self.require_class_attention()  # raises: CNNs and Swin have no class token
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward instead of storing them (``model.grad_checkpointing``): timm's own
        switch on the model (ViT blocks, whose loop here reads it; stages that checkpoint their blocks) and, for the
        stages this split runs itself, one checkpoint per stage."""
        self.model.set_grad_checkpointing(enable)
        self.grad_checkpointing = enable
        # the feature stages only, not an in-place activation (a resnet's stage 0 is act1): in-place ops would
        # modify a checkpointed input (timm's checkpoint_seq likewise wraps the stages)
        modules = self._modules_by_name
        stages = {i["module"] for i in self.model.feature_info}
        stages = {n for n in stages if n in modules and not getattr(modules[n], "inplace", False)}
        self._checkpointed = frozenset(stages) if enable else frozenset()

    def compile_stages(self, **options) -> None:
        """Run ``forward_to`` and ``forward_from`` through ``torch.compile`` (``options`` go to it).

        One graph per side of the split (and per train/eval mode and input shape); the crop between them
        stays eager. No module is wrapped, so parameter names and ``state_dict`` keys do not change (no
        ``_orig_mod.`` prefix) and checkpoints load with or without it.
        """
        self._compiled = (torch.compile(_run_to, **options), torch.compile(_run_from, **options))


class ChannelsLastSplit(BackboneSplit):
    """A timm model with NHWC stages (Swin, Swin V2) cut at a stage boundary: the stages run in their own layout,
    ``forward_to`` hands out the stage output as NCHW and ``forward_from`` takes NCHW back.

    Without ``dynamic_img_size`` the attention masks of each stage are built for its grid at ``img_size``, so a
    zoomed view must keep that grid (``zoom_grid``).
    """

    def forward_to(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        check_input_size(x, self.name, self._input_size)
        run = _run_stages if self._compiled is None else self._compiled[0]
        return run(self._modules_by_name, self.before, x, self._checkpointed).permute(0, 3, 1, 2), None  # NHWC -> NCHW view

    def forward_from(self, f: Tensor, context: Tensor | None = None) -> Tensor:
        run = _run_stages if self._compiled is None else self._compiled[1]
        return run(self._modules_by_name, self.after, f.permute(0, 2, 3, 1), self._checkpointed)  # final features, NHWC

    def zoom_grid(self, level: str) -> tuple[int, int] | None:
        if level == "image" or self._input_size is None:
            return self._input_size
        return tuple(self.model.layers[self.stage + 1].input_resolution)  # the grid stage k hands on


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

    def _setup(self, stage: int, need_after: bool) -> None:
        model = self.model
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

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch only: ``forward_intermediates`` and ``_run_blocks`` checkpoint the blocks when it is set."""
        self.model.set_grad_checkpointing(enable)
        self.grad_checkpointing = enable

    def compile_stages(self, **options) -> None:
        self._compiled = (torch.compile(_tokens_to, **options), torch.compile(_tokens_from, **options))


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
