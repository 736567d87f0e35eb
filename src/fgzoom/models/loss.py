"""The training loss: weighted terms over whichever outputs the network returned (``model.loss.*``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgzoom.errors import ConfigError
from fgzoom.models.learned_box import ranking_loss
from fgzoom.models.ranked_box import proposal_ranking_loss

LOSS_TERMS = ("raw", "zoom", "attention", "drop", "center", "rank")
DEFAULT_WEIGHTS = {"raw": 1.0, "zoom": 1.0, "attention": 1.0, "drop": 0.0, "center": 0.0, "rank": 1.0}


class FGVCLoss(nn.Module):
    """Sum of the weighted terms whose outputs are present (see ``fgzoom.models.network``):

    * ``raw``: cross-entropy of ``logits_raw`` (the plain model's only term),
    * ``zoom``: cross-entropy of ``logits_zoom``, or of every view of ``logits_views`` Tensor[B, k, K],
    * ``attention``: cross-entropy of ``logits_attention`` (BAP auxiliary classifier), and of each view of
      ``logits_attention_views`` Tensor[B, n - 1, K] (a recursive zoom's views that chose the next box),
    * ``drop``: cross-entropy of ``logits_drop`` (attention-drop branch),
    * ``center``: squared distance of ``part_features`` to their class centers, kept as an EMA buffer,
    * ``rank``: ranking loss of learned boxes (zoomed true-class probability must beat the raw one), or of ranked
      boxes (``rank_scores`` Tensor[B, n, R] must order the candidates as the zoomed branch's true-class
      probability from ``rank_logits`` Tensor[B, n, R, K] does: NTS-Net's pairwise hinge; training only).

    Args:
        weights: ``model.loss`` (missing terms take ``DEFAULT_WEIGHTS``); 0 switches a term off.
        num_classes: K, rows of the center buffer.
        part_features_dim: size of ``part_features`` (center loss), None when the net has none.
        rank_margin: margin of the ranking loss, None when the net does not learn its boxes.
        proposal_margin: margin of the ranking loss of ranked boxes, None when the net does not rank candidates.
        label_smoothing: of every cross-entropy term.
        center_momentum: EMA rate of the class centers.
    """

    def __init__(self, weights: Mapping[str, float] | None, num_classes: int, part_features_dim: int | None = None,
                 rank_margin: float | None = None, label_smoothing: float = 0.0, center_momentum: float = 0.05,
                 proposal_margin: float | None = None) -> None:
        super().__init__()
        weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        unknown = sorted(set(weights) - set(LOSS_TERMS))
        if unknown:
            raise ConfigError(f"model.loss.{unknown[0]}: unknown loss term; valid: {', '.join(LOSS_TERMS)}")
        negative = [k for k, v in weights.items() if v < 0]
        if negative:
            raise ConfigError(f"model.loss.{negative[0]}={weights[negative[0]]}: weights must be >= 0")
        self.weights = weights
        self.rank_margin = rank_margin
        self.proposal_margin = proposal_margin
        self.label_smoothing = label_smoothing
        self.center_momentum = center_momentum
        if weights["center"] > 0 and part_features_dim is not None:
            self.register_buffer("centers", torch.zeros(num_classes, part_features_dim))
        else:
            self.centers = None

    def _ce(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy against class indices Tensor[B] or class probabilities Tensor[B, K] (mixup)."""
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def forward(self, out: dict[str, Tensor], labels: Tensor, targets: Tensor | None = None) -> Tensor:
        """``out``: the network's outputs; labels Tensor[B] int64; targets Tensor[B, K] float, the mixed
        labels of a mixup/CutMix batch (None: one-hot ``labels``), which the cross-entropy terms then use
        while the center and ranking terms use ``labels`` (each image's dominant class) -> the scalar loss."""
        w = self.weights
        target = labels if targets is None else targets
        loss = w["raw"] * self._ce(out["logits_raw"], target)
        views = out.get("logits_views")  # [B, k, K] with k > 1 regions
        if views is not None:
            loss = loss + w["zoom"] * self._ce(views.flatten(0, 1), target.repeat_interleave(views.shape[1], dim=0))
        elif "logits_zoom" in out:
            loss = loss + w["zoom"] * self._ce(out["logits_zoom"], target)
        if self.rank_margin is not None and w["rank"] > 0:
            zoom = out["logits_zoom"] if views is None else views
            loss = loss + w["rank"] * ranking_loss(out["logits_raw"], zoom, labels, self.rank_margin)
        if self.proposal_margin is not None and w["rank"] > 0 and "rank_scores" in out:
            scores, logits = out["rank_scores"], out["rank_logits"]  # [B, n, R], [B, n, R, K]
            steps = scores.shape[1]
            loss = loss + w["rank"] * proposal_ranking_loss(
                scores.flatten(0, 1), logits.flatten(0, 1), labels.repeat_interleave(steps), self.proposal_margin)
        if "logits_attention" in out and w["attention"] > 0:
            loss = loss + w["attention"] * self._ce(out["logits_attention"], target)
            step_views = out.get("logits_attention_views")  # [B, n - 1, K] of a recursive zoom
            if step_views is not None:
                repeated = target.repeat_interleave(step_views.shape[1], dim=0)
                loss = loss + w["attention"] * self._ce(step_views.flatten(0, 1), repeated)
        if "logits_drop" in out:
            loss = loss + w["drop"] * self._ce(out["logits_drop"], target)
        if self.centers is not None and "part_features" in out:
            features = out["part_features"].float()
            centers = self.centers[labels]
            loss = loss + w["center"] * (features - centers).pow(2).sum(dim=1).mean()
            if self.training:
                with torch.no_grad():
                    self.centers.index_add_(0, labels, self.center_momentum * (features - centers))
        return loss
