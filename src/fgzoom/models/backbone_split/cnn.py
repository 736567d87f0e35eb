"""CNN backbones (resnet, convnext, efficientnet, regnet, ...; NCHW stages) cut at a ``feature_info`` stage."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from fgzoom.errors import ConfigError
from fgzoom.models.backbone_split.base import BackboneSplit, resolve_stage, unsupported
from fgzoom.models.branch_norm import recompute_context

HEAD_MODULES = {"global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "pre_logits", "flatten"}


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


def run_stages(modules: dict[str, nn.Module], names: tuple[str, ...], x: Tensor,
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
    return run_stages(modules, names, x, checkpointed)


def _run_from(modules: dict[str, nn.Module], names: tuple[str, ...], x: Tensor,
              checkpointed: frozenset[str] = frozenset()) -> Tensor:
    # a second code object: torch.compile keeps one cache (and recompile limit) per code object
    return run_stages(modules, names, x, checkpointed)


class StageSplit(BackboneSplit):
    """A timm CNN cut after feature stage ``stage``: the model's modules up to the output of
    ``feature_info[stage]``, then the rest of ``forward_features`` (for a resnet, stage 0 is act1, 1 layer1, ...).

    ``model.forward_head(forward_from(*forward_to(x)))`` equals ``model(x)``.

    Args:
        model: a timm model with ``feature_info`` and ``forward_head``.
        stage: index into ``model.feature_info`` (negative counts from the end).
        need_after: require at least one stage after ``stage`` (feature-level zoom).
        name: the ``model.backbone.name`` the errors name (default: the model's class name).
    """

    probe_on_build = True  # run the split once at build time (NCHW families whose stages may not be NCHW)

    def __init__(self, model: nn.Module, stage: int, need_after: bool = True, name: str | None = None) -> None:
        super().__init__(model, name)
        self._checkpointed: frozenset[str] = frozenset()  # stage modules run through checkpoint (set_grad_checkpointing)
        self._setup(stage, need_after)

    def _setup(self, stage: int, need_after: bool) -> None:
        model = self.model
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
        if self.probe_on_build:
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
        run = run_stages if self._compiled is None else self._compiled[0]
        f = run(self._modules_by_name, self.before, x, self._checkpointed)
        if f.ndim != 4 or f.shape[1] != self.channels:  # a family whose stages are not NCHW feature maps
            raise unsupported(self.name, self.model)
        return f, None

    def forward_from(self, f: Tensor, context: Tensor | None = None) -> Tensor:
        """Stage features Tensor[B', C, h', w'] (B' a multiple of the batch of ``context``) -> the final
        features (input of ``forward_head``)."""
        run = run_stages if self._compiled is None else self._compiled[1]
        return run(self._modules_by_name, self.after, f, self._checkpointed)

    def tail_modules(self) -> list[nn.Module]:
        """The modules ``forward_from`` and ``forward_head`` run (those a feature-level zoomed view passes)."""
        head = [child for name, child in self.model.named_children() if name in HEAD_MODULES]
        return [self._modules_by_name[n] for n in self.after] + head

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's own switch on the model (stages that checkpoint their blocks) and, for the stages this split runs
        itself, one checkpoint per stage (``model.grad_checkpointing``)."""
        super().set_grad_checkpointing(enable)
        # the feature stages only, not an in-place activation (a resnet's stage 0 is act1): in-place ops would
        # modify a checkpointed input (timm's checkpoint_seq likewise wraps the stages)
        modules = self._modules_by_name
        stages = {i["module"] for i in self.model.feature_info}
        stages = {n for n in stages if n in modules and not getattr(modules[n], "inplace", False)}
        self._checkpointed = frozenset(stages) if enable else frozenset()

    def compile_stages(self, **options) -> None:
        self._compiled = (torch.compile(_run_to, **options), torch.compile(_run_from, **options))
