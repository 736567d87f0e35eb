"""Learned zoom boxes: centre from a soft-argmax of the attention, side from a small head.

Trained end to end through a sampler differentiable in the box (``continuous``, ``grid_sample``): the zoom branch's loss moves the centre (through the
attention maps and the soft-argmax temperature) and the side (through the scale head). The side is bounded
to ``[min_scale, max_scale]`` of the frame, the guard against the collapse of learned crops to the whole
frame; the ranking loss (``ranking_loss``, RA-CNN) asks the zoomed view to be more confident in the true
class than the raw view.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LearnedBox(nn.Module):
    """Square boxes (in frame fractions) from stage features and attention maps.

    With ``num_regions`` = k > 1 the M maps are split into k groups (``torch.chunk``); region r's centre is
    the soft-argmax of group r's mean map, and the head predicts one side per region.

    Args:
        in_channels: C of the stage features.
        num_regions: k, boxes per sample (<= M).
        min_scale, max_scale: range of the box side as a fraction of the frame side.
        temperature: initial soft-argmax sharpness on maps scaled to max 1 (learned, kept > 0).
    """

    def __init__(self, in_channels: int, num_regions: int, min_scale: float, max_scale: float,
                 temperature: float = 10.0) -> None:
        super().__init__()
        self.num_regions = num_regions
        self.min_scale, self.max_scale = min_scale, max_scale
        self.scale = nn.Linear(in_channels, num_regions)
        nn.init.zeros_(self.scale.weight)  # starts at the middle of the range for every image
        nn.init.zeros_(self.scale.bias)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    def centres(self, maps: Tensor, offset: tuple[float, float] = (0.0, 0.0)) -> Tensor:
        """Tensor[B, M, h, w] -> soft-argmax centres Tensor[B, k, 2] ``(cy, cx)`` in frame fractions, cell i
        centred at ``(i + 0.5 + offset) / h`` (``offset``: the backbone's cell offset, ``fgzoom.ops.cell_geometry``)."""
        b, m, h, w = maps.shape
        groups = torch.stack([g.float().mean(dim=1) for g in maps.chunk(self.num_regions, dim=1)], dim=1)
        flat = groups.flatten(2)  # [B, k, h*w]
        flat = flat / flat.amax(dim=2, keepdim=True).clamp_min(1e-6)
        weights = (flat * self.log_temperature.exp()).softmax(dim=2).view(b, -1, h, w)
        ys = (torch.arange(h, device=maps.device, dtype=torch.float32) + 0.5 + offset[0]) / h
        xs = (torch.arange(w, device=maps.device, dtype=torch.float32) + 0.5 + offset[1]) / w
        cy = (weights.sum(dim=3) * ys).sum(dim=2)
        cx = (weights.sum(dim=2) * xs).sum(dim=2)
        return torch.stack([cy, cx], dim=2)

    def forward(self, features: Tensor, maps: Tensor, grid: tuple[int, int],
                offset: tuple[float, float] = (0.0, 0.0)) -> Tensor:
        """Stage features Tensor[B, C, h, w] and maps Tensor[B, M, h, w] -> boxes Tensor[B, k, 4] float
        ``(y0, x0, y1, x1)`` on ``grid`` (continuous coordinates), inside the frame; ``offset``: see ``centres``."""
        centre = self.centres(maps, offset)  # [B, k, 2]
        pooled = features.float().mean(dim=(2, 3))
        side = self.min_scale + (self.max_scale - self.min_scale) * torch.sigmoid(self.scale(pooled))  # [B, k]
        half = side[..., None] / 2
        lo, hi = centre - half, centre + half
        shift = F.relu(-lo) - F.relu(hi - 1)  # slide inside the frame, keeping the side
        lo, hi = lo + shift, hi + shift
        size = torch.tensor(grid, device=features.device, dtype=torch.float32)
        lo, hi = lo * size, hi * size
        return torch.stack([lo[..., 0], lo[..., 1], hi[..., 0], hi[..., 1]], dim=-1)


def ranking_loss(logits_raw: Tensor, logits_zoom: Tensor, labels: Tensor, margin: float) -> Tensor:
    """RA-CNN's pairwise ranking loss: ``max(0, p_raw[y] - p_zoom[y] + margin)``, mean over samples.

    ``p_raw`` is detached, so the loss moves the zoom (its box and branch), never lowers the raw branch.

    Args:
        logits_raw: Tensor[B, K]. logits_zoom: Tensor[B, K] or Tensor[B, k, K] (every view ranked).
        labels: Tensor[B] int64.
    """
    p_raw = logits_raw.detach().float().softmax(-1).gather(-1, labels[:, None])  # [B, 1]
    if logits_zoom.ndim == 3:
        p_zoom = logits_zoom.float().softmax(-1).gather(-1, labels[:, None, None].expand(-1, logits_zoom.shape[1], 1))[..., 0]
    else:
        p_zoom = logits_zoom.float().softmax(-1).gather(-1, labels[:, None])
    return F.relu(p_raw - p_zoom + margin).mean()
