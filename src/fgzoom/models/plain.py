"""The baseline: a timm classifier with no zoom, same backbone and outputs as the zoom model."""

from __future__ import annotations

from torch import Tensor, nn

from fgzoom.models.backbone import BackboneConfig, create_backbone
from fgzoom.models.input_view import InputView


class PlainNet(nn.Module):
    """``timm.create_model(backbone.name)`` with ``num_classes`` outputs, run on the batch resized to
    ``input_size`` (None = as loaded). forward(x Tensor[B, 3, H, W]) -> {"logits": Tensor[B, K]}."""

    def __init__(self, backbone: BackboneConfig, num_classes: int, input_size: int | None = None) -> None:
        super().__init__()
        self.view = InputView(input_size)
        self.model = create_backbone(backbone, num_classes)

    def forward(self, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        return {"logits": self.model(self.view(x))}

    def compile_backbone(self, **options) -> None:
        """``torch.compile`` the timm model in place (``state_dict`` keys unchanged)."""
        self.model.compile(**options)
