"""Ranked boxes (``model.zoom.box=ranked``): candidate boxes from the attention, scored by a small head trained
to rank them as the zoomed branch does, in the spirit of NTS-Net's navigator (Yang et al., ECCV 2018).

* Candidates: ``fgzoom.ops.proposals.attention_proposals`` (peaks of the attention maps at a few scales, made
  distinct by non-maximum suppression; C per sample).
* Scores: ``ProposalScorer``, RoI-align of the stage features inside each candidate, then a two-layer head.
  The network feeds it detached features, so its loss trains the head alone, never the backbone or the boxes.
* Targets (training): the zoomed branch's true-class probability on a few of the candidates (``probe_order``
  picks them: the chosen top-k, then random others), measured by the network on a cheap pass without
  gradient; ``proposal_ranking_loss`` (NTS-Net's pairwise hinge) makes the scores agree with their order.
* Selection: the top-k candidates by score are zoomed, in training and at evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align


class ProposalScorer(nn.Module):
    """One scalar score per candidate box from the stage features inside it.

    ``roi_align`` (torchvision, ``aligned=True``: cell ``i`` spans ``[i, i + 1)``, the box convention of
    ``fgzoom.ops.boxes``) pools each box to ``pool x pool`` cells; the flattened, layer-normalized pool and the
    box's side (fractions of the frame, so the head can tell scales apart) pass a Linear-ReLU-Linear head.

    Args:
        in_channels: C of the stage features.
        pool: RoI-align output side.
        hidden: width of the head's hidden layer.
    """

    def __init__(self, in_channels: int, pool: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.pool = pool
        self.norm = nn.LayerNorm(in_channels * pool * pool)
        self.hidden = nn.Linear(in_channels * pool * pool + 2, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, features: Tensor, boxes: Tensor) -> Tensor:
        """Stage features Tensor[B, C, h, w] and boxes Tensor[B, N, 4] float ``(y0, x0, y1, x1)`` on the
        features' grid -> scores Tensor[B, N] float32 (higher: zoom there)."""
        b, n = boxes.shape[:2]
        h, w = features.shape[-2:]
        flat = boxes.float().flatten(0, 1)  # [B*N, 4]
        index = torch.arange(b, device=boxes.device, dtype=torch.float32).repeat_interleave(n)[:, None]
        rois = torch.cat([index, flat[:, [1, 0, 3, 2]]], dim=1)  # torchvision's (index, x0, y0, x1, y1)
        pooled = roi_align(features, rois.to(features.dtype), self.pool, spatial_scale=1.0, sampling_ratio=2,
                           aligned=True)  # [B*N, C, pool, pool]
        sides = torch.stack([(flat[:, 2] - flat[:, 0]) / h, (flat[:, 3] - flat[:, 1]) / w], dim=1)  # of the frame
        x = torch.cat([self.norm(pooled.flatten(1).float()), sides], dim=1)
        return self.out(F.relu(self.hidden(x))).float().view(b, n)


def probe_order(scores: Tensor, k: int, probes: int) -> Tensor:
    """Which candidates get a ranking target this step: the top-``k`` by score (the zoomed ones, best first),
    then the others in random order; the first ``probes`` of them.

    Args:
        scores: Tensor[B, C]. k: int >= 1. probes: R, int in [1, C].

    Returns:
        Tensor[B, R] int64 indices into the C candidates, distinct per sample.
    """
    top = scores.detach().topk(k, dim=1).indices  # [B, k]
    key = torch.rand(scores.shape, device=scores.device)  # [B, C] in [0, 1): the others at random
    key = key.scatter(1, top, (2.0 + torch.arange(k, 0, -1, device=scores.device, dtype=key.dtype)).expand_as(top))
    return key.topk(probes, dim=1).indices


def proposal_ranking_loss(scores: Tensor, logits: Tensor, labels: Tensor, margin: float) -> Tensor:
    """NTS-Net's pairwise ranking hinge: for every pair of candidates of a sample where the zoomed branch is
    more confident in the true class on ``i`` than on ``j``, ``max(0, margin - (s_i - s_j))``; the mean over
    those pairs (0 when there are none).

    The targets come from ``logits`` (detached): only the scores receive gradient.

    Args:
        scores: Tensor[N, R], the head's scores of R candidates.
        logits: Tensor[N, R, K], the zoomed branch's logits on them.
        labels: Tensor[N] int64 true classes.
        margin: number >= 0, in score units.

    Returns:
        A scalar float32 Tensor.
    """
    r = scores.shape[1]
    index = labels[:, None, None].expand(-1, r, 1)
    target = logits.detach().float().softmax(-1).gather(-1, index)[..., 0]  # [N, R]
    scores = scores.float()
    better = target[:, :, None] > target[:, None, :]  # [N, R, R]: i more confident than j
    hinge = F.relu(margin - (scores[:, :, None] - scores[:, None, :]))
    return (hinge * better).sum() / better.sum().clamp_min(1)
