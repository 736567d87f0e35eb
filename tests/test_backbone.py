"""The backbone split reproduces timm's forward for every supported family; bad names are explained."""

from __future__ import annotations

import pytest
import timm
import torch

from fgzoom.errors import ConfigError
from fgzoom.models.backbone import BackboneConfig, create_backbone
from fgzoom.models.backbone_split import StageSplit, resolve_stage

FAMILIES = ["resnet18", "convnext_atto", "efficientnet_b0", "regnety_002"]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("stage", [-2, 1])
def test_split_equals_full_forward(name, stage):
    model = timm.create_model(name, pretrained=False, num_classes=3)
    split = StageSplit(model, stage).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(split(x), model(x))
    f, context = split.forward_to(torch.randn(1, 3, 64, 64))
    assert context is None  # CNNs hand nothing but the feature map to the tail
    assert f.shape[1] == split.channels
    assert f.shape[-1] == 64 // split.reduction


def test_stage_bounds():
    assert resolve_stage(-2, 5, "resnet18", need_after=True) == 3
    assert resolve_stage(4, 5, "resnet18", need_after=False) == 4
    with pytest.raises(ConfigError, match=r"model.zoom.stage=4: .*allowed -5..3"):
        resolve_stage(4, 5, "resnet18", need_after=True)
    with pytest.raises(ConfigError, match="model.zoom.stage=-6"):
        resolve_stage(-6, 5, "resnet18", need_after=False)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ConfigError, match=r"model.backbone.name='resnet81'.*did you mean.*resnet18"):
        BackboneConfig(name="resnet81")


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="pretrained_path=.*not found"):
        BackboneConfig(name="resnet18", pretrained_path=str(tmp_path / "w.safetensors"))


def test_local_weights_file_loads_with_adapted_head(tmp_path):
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    model = create_backbone(BackboneConfig(name="resnet18", pretrained_path=str(path)), num_classes=7)
    assert model.fc.out_features == 7
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_offline_pretrained_request_fails_at_once_with_the_fix(monkeypatch, tmp_path):
    """Offline (HF_HUB_OFFLINE) with an empty cache: one ConfigError naming the fix, and no connection is tried."""
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"a connection was tried: {args}")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ConfigError, match="model.backbone.pretrained_path="):
        create_backbone(BackboneConfig(name="resnet18", pretrained=True), num_classes=3)
