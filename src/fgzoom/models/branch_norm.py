"""BatchNorm statistics of the zoomed views, kept apart from the raw image's.

The zoom model runs the backbone layers after the split (feature level) or the whole backbone (image level)
twice per step: on the raw view and on the zoomed views, in separate passes. In training each pass is
normalised with its own batch statistics, but a BatchNorm layer has one pair of running statistics, which
both passes update, so at evaluation each branch is normalised with the mean of the two, which neither was
trained with. Where the zoomed views look unlike the whole image (a crop of a small object in clutter, or a
network trained from scratch) this mismatch cost the raw branch 0.10 of accuracy at feature level and left
the image-level model near chance on cluttered digits (docs/results.md, "BatchNorm statistics per branch").

``BranchStats`` gives every BatchNorm layer of the zoom pass a second set of running statistics
(``zoom_running_mean``, ``zoom_running_var``, ``zoom_num_batches_tracked``: buffers, so they are checkpointed,
averaged by EMA and exported) and ``BranchStats.zoom()`` swaps them in for the zoom pass. The affine weights
stay shared. This is the auxiliary-BatchNorm idea of AdvProp (Xie et al., CVPR 2020) and of timm's
``SplitBatchNorm2d``, applied to the two views of the zoom model. A stage run under gradient checkpointing
recomputes its forward with the statistics that were active when it first ran (``recompute_context``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

STATS = ("running_mean", "running_var", "num_batches_tracked")
PREFIX = "zoom_"

# the BranchStats whose zoom statistics are swapped in now (None: the raw statistics), for recomputation
_ACTIVE: contextvars.ContextVar[BranchStats | None] = contextvars.ContextVar("fgzoom_branch_stats", default=None)


def _norms(modules: list[nn.Module]) -> list[_BatchNorm]:
    """The BatchNorm layers (any subclass, e.g. timm's ``BatchNormAct2d``) under ``modules`` that keep running
    statistics, each once."""
    layers = (m for root in modules for m in root.modules())
    keeps_stats = (m for m in layers if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None)
    return list(dict.fromkeys(keeps_stats))


class BranchStats:
    """Running statistics of the zoom pass for the BatchNorm layers under ``modules``.

    Registers, on each such layer, copies of its running statistics as ``zoom_<name>`` buffers (so the zoom
    statistics start from the loaded weights' statistics). Holds no tensors itself: a deep copy of the network
    (EMA) carries its own layers and buffers.
    """

    def __init__(self, modules: list[nn.Module]) -> None:
        self.norms = _norms(modules)
        for bn in self.norms:
            for name in STATS:
                bn.register_buffer(PREFIX + name, getattr(bn, name).detach().clone())

    def _swap(self) -> None:
        for bn in self.norms:
            buffers = bn._buffers
            for name in STATS:
                buffers[name], buffers[PREFIX + name] = buffers[PREFIX + name], buffers[name]

    @contextmanager
    def zoom(self) -> Iterator[None]:
        """Within the block, the layers normalise with (and in training update) the zoom statistics."""
        if _ACTIVE.get() is self:  # already swapped in: a second swap would bring the raw statistics back
            yield
            return
        self._swap()
        token = _ACTIVE.set(self)
        try:
            yield
        finally:
            _ACTIVE.reset(token)
            self._swap()


def recompute_context() -> tuple[Any, Any]:
    """``context_fn`` for ``torch.utils.checkpoint``: run the recomputation of a checkpointed stage with the
    statistics that were active in its forward (the backward runs after the zoom pass has swapped them back)."""
    active = _ACTIVE.get()
    return nullcontext(), (active.zoom() if active is not None else nullcontext())


def missing_zoom_stats(state: dict[str, Any], expected: Callable[[str], bool]) -> dict[str, str]:
    """For a checkpoint saved before the zoom statistics existed: ``{zoom key: raw key}`` for each
    ``expected`` zoom key whose raw statistic is in ``state`` but which is not."""
    out = {}
    for key in list(state):
        head, _, name = key.rpartition(".")
        if name in STATS:
            zoom_key = f"{head}.{PREFIX}{name}"
            if zoom_key not in state and expected(zoom_key):
                out[zoom_key] = key
    return out
