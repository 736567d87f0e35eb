"""Swin and Swin V2 (NHWC stages) cut at a stage boundary."""

from __future__ import annotations

from torch import Tensor

from fgzoom.models.backbone_split.base import check_input_size
from fgzoom.models.backbone_split.cnn import StageSplit, run_stages


class ChannelsLastSplit(StageSplit):
    """A timm model with NHWC stages (Swin, Swin V2) cut at a stage boundary: the stages run in their own layout,
    ``forward_to`` hands out the stage output as NCHW and ``forward_from`` takes NCHW back.

    Without ``dynamic_img_size`` the attention masks of each stage are built for its grid at ``img_size``, so a
    zoomed view must keep that grid (``zoom_grid``).
    """

    probe_on_build = False  # NHWC stages: forward_to permutes them itself

    def forward_to(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        check_input_size(x, self.name, self._input_size)
        run = run_stages if self._compiled is None else self._compiled[0]
        return run(self._modules_by_name, self.before, x, self._checkpointed).permute(0, 3, 1, 2), None  # NHWC -> NCHW view

    def forward_from(self, f: Tensor, context: Tensor | None = None) -> Tensor:
        run = run_stages if self._compiled is None else self._compiled[1]
        return run(self._modules_by_name, self.after, f.permute(0, 2, 3, 1), self._checkpointed)  # final features, NHWC

    def zoom_grid(self, level: str) -> tuple[int, int] | None:
        if level == "image" or self._input_size is None:
            return self._input_size
        return tuple(self.model.layers[self.stage + 1].input_resolution)  # the grid stage k hands on
