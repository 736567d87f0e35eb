"""The forward contract every fgzoom network keeps, so the LightningModule treats them all alike.

``forward(x Tensor[B, 3, H, W]) -> dict[str, Tensor]`` with at least

* ``logits`` Tensor[B, K]: the prediction (argmax = class; the zoom net's fused log-probabilities),
* ``logits_raw`` Tensor[B, K]: the backbone's own classifier on the whole image,

and, for networks that zoom, the outputs documented on ``ZoomNet`` (``logits_zoom``, ``boxes_image``,
``degenerate``, ...). The loss and the metrics key on which outputs are present, never on the class.
"""

from __future__ import annotations

from torch import nn


class FGVCNet(nn.Module):
    """Base of ``PlainNet`` and ``ZoomNet``: the attributes the module reads and sets.

    Attributes:
        branches: extra accuracies to log, metric name -> output key (e.g. ``acc_zoom`` -> ``logits_zoom``).
        part_features_dim: size of the ``part_features`` output the center loss pulls to class centers
            (None: the net has none).
        rank_margin: margin of the ranking loss when the net learns its boxes (None: no ranking loss).
        proposal_margin: margin of the ranking loss of scored candidate boxes (``box=ranked``; None: none).
        progress: fraction of training done, set by the module at each training step (drives warm-ups).
        attention_drop: compute ``logits_drop`` (the attention-drop branch) in training; the module sets it
            when ``model.loss.drop`` > 0.
        offset: where the net's attention cells sit in the image, ``(dy, dx)`` in cells
            (``fgzoom.ops.cell_geometry``); ``ZoomNet`` measures it, other nets have no attention cells.
    """

    branches: dict[str, str] = {}
    part_features_dim: int | None = None
    rank_margin: float | None = None
    proposal_margin: float | None = None
    offset: tuple[float, float] = (0.0, 0.0)

    def __init__(self) -> None:
        super().__init__()
        self.progress = 1.0
        self.attention_drop = False

    def compile_backbone(self, **options) -> None:
        """``torch.compile`` the backbone in place (``state_dict`` keys unchanged); ``options`` go to it."""
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing of the backbone (``model.grad_checkpointing``): less memory, one more forward."""
        raise NotImplementedError
