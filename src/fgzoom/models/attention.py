"""Attention maps over stage features: a learned 1x1-conv head (WS-DAN), the channel sum (MMAL), or a ViT's
class-token attention (``cls``, TransFG's idea).

Kinds (``model.zoom.attention``):

* ``head``: trained through bilinear attention pooling (BAP): its maps pool the features into a part-feature
  matrix that an auxiliary classifier must classify, so maps move to discriminative parts.
* ``channel_sum``: the class-agnostic mean of the rectified channels; no parameters.
* ``cls``: the class token's attention to the patch tokens in a ViT's last block, averaged over heads
  (``class_token_attention``); no parameters. The backbone split computes it during the full-image pass
  (``TokenSplit.forward_from_attention``), as it needs that block's input.

``head`` and ``channel_sum`` work on any grid Tensor[B, C, h, w], a ViT's patch-token grid included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.pos_embed_sincos import apply_rot_embed_cat
from torch import Tensor, nn

ATTENTION_KINDS = ("head", "channel_sum", "cls")


def class_token_attention(tokens: Tensor, block: nn.Module, num_prefix_tokens: int, grid: tuple[int, int],
                          rope: Tensor | None = None) -> Tensor:
    """The class token's attention to the patch tokens in ``block``, averaged over heads.

    Recomputed from the block's own ``norm1`` and query/key projections (timm's fused attention does not
    return its weights): softmax over all keys of the class token's scaled query, the patch columns kept.

    Args:
        tokens: Tensor[B, P + h*w, C], the block's input: the class token first, then the other P - 1 prefix
            tokens, then the patch tokens row by row.
        block: a timm ViT ``Block`` (``attn``: ``timm.layers.Attention``) or an EVA block (``EvaAttention``,
            with ``rope`` its rotary embedding of the patch tokens).
        num_prefix_tokens: P.
        grid: (h, w) of the patch tokens.

    Returns:
        Tensor[B, 1, h, w], in [0, 1], each map summing with the prefix columns to 1 per head.
    """
    attn = block.attn
    x = block.norm1(tokens)
    b, n, _ = x.shape
    heads = attn.num_heads
    if getattr(attn, "qkv", None) is not None:
        q_bias = getattr(attn, "q_bias", None)
        if q_bias is None:
            qkv = attn.qkv(x)
        else:  # EVA keeps the q/k/v biases apart from the fused projection
            qkv = F.linear(x, attn.qkv.weight, torch.cat((q_bias, attn.k_bias, attn.v_bias)))
        q, k = qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)[:2].unbind(0)  # [B, nh, N, d] each
    else:
        q = attn.q_proj(x).reshape(b, n, heads, -1).transpose(1, 2)
        k = attn.k_proj(x).reshape(b, n, heads, -1).transpose(1, 2)
    q, k = attn.q_norm(q[:, :, :1]), attn.k_norm(k)  # the class token's query: [B, nh, 1, d]
    if rope is not None:  # rotary positions on the patch keys (prefix tokens carry none)
        half = getattr(attn, "rotate_half", False)
        patches = apply_rot_embed_cat(k[:, :, num_prefix_tokens:], rope, half=half).type_as(k)
        k = torch.cat([k[:, :, :num_prefix_tokens], patches], dim=2)
    weights = ((q.float() * attn.scale) @ k.float().transpose(-2, -1)).softmax(dim=-1)  # [B, nh, 1, N]
    maps = weights[:, :, 0, num_prefix_tokens:].mean(dim=1)  # [B, h*w]
    return maps.view(b, 1, grid[0], grid[1]).to(tokens.dtype)


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
            rectified channels, MMAL; no parameters, no auxiliary logits); ``cls`` has no parameters and its
            one map comes from the backbone split (``TokenSplit.forward_from_attention``), not from here.
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
        if self.kind == "cls":
            raise ValueError("model.zoom.attention=cls: the map is the backbone's class-token attention; "
                             "read it with TokenSplit.forward_from_attention")
        if self.maps is None:
            return features.clamp_min(0).mean(dim=1, keepdim=True), None, None
        maps = self.maps(features)
        matrix = bilinear_attention_pooling(features, maps)
        # WS-DAN scales the normalised matrix before the linear layer so logits are not tiny
        return maps, self.classifier(matrix * 100.0), matrix
