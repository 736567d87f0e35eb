"""The network's global view: the loaded batch resized to ``model.input_size`` before the backbone.

With ``model.input_size`` smaller than ``data.image_size`` the backbone runs on a cheaper downsampled
view of the batch, while ``model.zoom.level=image`` still crops its zoomed view from the full-resolution
batch (glance-and-focus: detail lost to downsampling comes back in the zoomed branch). The plain model
takes the same view, so the two are compared on the same backbone input.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from fgzoom.errors import ConfigError


class InputView(nn.Module):
    """x Tensor[B, C, H, W] -> Tensor[B, C, size, size] (bilinear, antialiased); identity when ``size`` is None
    or already matches."""

    def __init__(self, size: int | None) -> None:
        super().__init__()
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
            raise ConfigError(f"model.input_size={size!r}: must be an integer >= 8 (pixels), or null to use "
                              "the batch as loaded (data.image_size)")
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if self.size is None or tuple(x.shape[-2:]) == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)

    def extra_repr(self) -> str:
        return f"size={self.size}"
