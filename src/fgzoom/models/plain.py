"""The baseline: a timm classifier with no zoom, same backbone and outputs as the zoom model."""

from __future__ import annotations

from torch import Tensor

from fgzoom.models.backbone import BackboneConfig, create_backbone
from fgzoom.models.backbone_split import check_input_size, fixed_input_size
from fgzoom.models.input_view import InputView
from fgzoom.models.network import FGVCNet


class PlainNet(FGVCNet):
    """``timm.create_model(backbone.name)`` with ``num_classes`` outputs, run on the batch resized to
    ``input_size`` (None = as loaded). A model with a fixed input size (ViT, Swin) is built for that side
    (``input_size``, else ``backbone.img_size``).

    forward(x Tensor[B, 3, H, W]) -> {"logits": Tensor[B, K], "logits_raw": the same tensor}.
    """

    def __init__(self, backbone: BackboneConfig, num_classes: int, input_size: int | None = None) -> None:
        super().__init__()
        self.view = InputView(input_size)
        self.model = create_backbone(backbone, num_classes, input_size=input_size)
        self.name = backbone.name
        self._fixed_size = fixed_input_size(self.model)  # None: the model takes any input size

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.view(x)
        check_input_size(x, self.name, self._fixed_size)
        logits = self.model(x)
        return {"logits": logits, "logits_raw": logits}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's own switch (``set_grad_checkpointing``): the model's forward checkpoints its stages or blocks."""
        self.model.set_grad_checkpointing(enable)

    def compile_backbone(self, **options) -> None:
        """``torch.compile`` the timm model in place (``state_dict`` keys unchanged)."""
        self.model.compile(**options)
