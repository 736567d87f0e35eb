"""Attention maps over stage features: a learned 1x1-conv head (WS-DAN) or the channel sum (MMAL).

The learned head is trained through bilinear attention pooling (BAP): its maps pool the features into
a part-feature matrix that an auxiliary classifier must classify, so maps move to discriminative parts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_KINDS = ("head", "channel_sum")


def bilinear_attention_pooling(features: Tensor, attention: Tensor) -> Tensor:
    """Pool ``features`` Tensor[B, C, h, w] under each of ``attention`` Tensor[B, M, h, w].

    Returns the signed-sqrt, L2-normalised part-feature matrix flattened to Tensor[B, M*C].
    """
    b, c, h, w = features.shape
    # One batched matmul on views, [B, M, hw] @ [B, hw, C]: the einsum it replaces copied the features into
    # [B, hw, C] in the forward and again in the backward.
    matrix = torch.bmm(attention.flatten(2), features.flatten(2).transpose(1, 2)) / float(h * w)  # [B, M, C]
    matrix = torch.sign(matrix) * torch.sqrt(matrix.abs() + 1e-12)
    return F.normalize(matrix.flatten(1), dim=1)


class AttentionHead(nn.Module):
    """M attention maps from stage features, and (for ``kind=head``) the BAP auxiliary classifier.

    Args:
        kind: ``head`` (1x1 conv + BN + ReLU, WS-DAN) or ``channel_sum`` (class-agnostic mean of the
            rectified channels, MMAL; no parameters, no auxiliary logits).
        in_channels: C of the stage features.
        num_maps: M, the number of attention maps (``head`` only).
        num_classes: classes of the auxiliary BAP classifier (``head`` only).
    """

    def __init__(self, kind: str, in_channels: int, num_maps: int, num_classes: int) -> None:
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"model.zoom.attention={kind!r}: must be one of {ATTENTION_KINDS}")
        self.kind = kind
        if kind == "head":
            self.maps = nn.Sequential(
                nn.Conv2d(in_channels, num_maps, kernel_size=1, bias=False),
                nn.BatchNorm2d(num_maps),
                nn.ReLU(inplace=True),
            )
            self.classifier = nn.Linear(num_maps * in_channels, num_classes, bias=False)
            self.num_maps = num_maps
        else:
            self.maps = None
            self.classifier = None
            self.num_maps = 1

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Tensor[B, C, h, w] -> (maps Tensor[B, M, h, w], aux logits Tensor[B, K] or None,
        part-feature matrix Tensor[B, M*C] or None)."""
        if self.maps is None:
            return features.clamp_min(0).mean(dim=1, keepdim=True), None, None
        maps = self.maps(features)
        matrix = bilinear_attention_pooling(features, maps)
        # WS-DAN scales the normalised matrix before the linear layer so logits are not tiny
        return maps, self.classifier(matrix * 100.0), matrix
