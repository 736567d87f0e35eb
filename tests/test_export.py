"""Export of a checkpoint's whole zoom model (``scripts/export.py``, ``fgzoom.cli.export``): ONNX run through
onnxruntime and TorchScript run through ``torch.jit.load`` against PyTorch on another batch size than the one
exported (the batch dimension is dynamic), the JSON sidecar, and the one-line refusal of an option that does
not export (``model.zoom.sampler=slice``).

One tiny zoom model (default config: continuous sampler, feature level) is trained once for the module, and the
script exports it to ONNX once; the tests reuse both.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fgzoom.checkpoints.io import load_model
from fgzoom.cli.export import LogitsModel, export, export_model
from fgzoom.cli.runtime import one_line_errors
from fgzoom.cli.train import train
from fgzoom.errors import ConfigError
from tests.helpers import TINY_SYNTHETIC, compose_config, run_script_here, tiny_overrides

SIZE = TINY_SYNTHETIC["image_size"]
CLASSES = TINY_SYNTHETIC["num_classes"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root) -> Path:
    """A zoom model trained for one (short) epoch on the tiny synthetic set; returns its checkpoint."""
    run = tmp_path_factory.mktemp("trained") / "run"
    overrides = [*tiny_overrides(synthetic_root), "model.backbone.name=resnet10t", "test=false", "logger=none",
                 "callbacks.zoom_figures=null", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    train(compose_config("train.yaml", overrides, run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """``scripts/export.py format=onnx`` (example batch 2) run as a user runs it (in this process); returns (result, run folder).
    Skips without the export extra (onnx, onnxscript, onnxruntime); the TorchScript tests need none of it."""
    for package in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(package)
    run = tmp_path_factory.mktemp("export") / "run"
    result = run_script_here("export.py", f"ckpt_path={trained}", "format=onnx", "batch_size=2", "verify=false",
                             f"hydra.run.dir={run}")
    return result, run


def _images(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))


def _reference(ckpt: Path, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return LogitsModel(load_model(str(ckpt)).net).eval()(images)


def test_export_script_writes_the_onnx_file_and_its_sidecar(exported, trained):
    result, run = exported
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "model.onnx").is_file() and not (run / "model.onnx.data").exists()  # one file, weights inline
    meta = json.loads((run / "model.json").read_text())
    assert meta["format"] == "onnx" and meta["file"] == "model.onnx"
    assert meta["input"]["name"] == "image" and meta["input"]["shape"] == ["batch", 3, SIZE, SIZE]
    assert meta["output"]["name"] == "logits" and meta["output"]["shape"] == ["batch", CLASSES]
    assert meta["image_size"] == SIZE and len(meta["mean"]) == len(meta["std"]) == 3
    saved = torch.load(trained, map_location="cpu", weights_only=False)
    assert meta["class_names"] == saved["fgzoom"]["class_names"] and len(meta["class_names"]) == CLASSES
    assert meta["mean"] == pytest.approx(saved["fgzoom"]["config"]["data"]["mean"])
    assert meta["model"]["zoom"]["sampler"] == "continuous" and meta["model"]["zoom"]["level"] == "feature"


def test_onnx_matches_pytorch_on_another_batch_size(exported, trained):
    import onnxruntime as ort

    _, run = exported
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "image" and isinstance(inp.shape[0], str)  # a symbolic (dynamic) batch dimension
    for batch in (3, 1):  # exported with 2
        images = _images(batch)
        got = torch.from_numpy(session.run([out.name], {"image": images.numpy()})[0])
        expected = _reference(trained, images)
        error = (got - expected).abs().max().item()
        print(f"onnx batch {batch}: max abs logit error {error:.3g}")
        assert got.shape == (batch, CLASSES)
        assert error < 1e-4
        assert torch.equal(got.argmax(1), expected.argmax(1))


def test_torchscript_matches_pytorch_on_another_batch_size(trained, tmp_path):
    cfg = compose_config("export.yaml", [f"ckpt_path={trained}", "format=torchscript",
                                         f"out={tmp_path / 'zoom.pt'}"], tmp_path / "run")
    path = export(cfg)  # verify=true: export itself runs the file on a batch of 3 against PyTorch
    meta = json.loads((tmp_path / "zoom.json").read_text())
    assert path == tmp_path / "zoom.pt" and meta["format"] == "torchscript" and meta["max_abs_error"] < 1e-4
    scripted = torch.jit.load(str(path))
    images = _images(3)
    with torch.no_grad():
        got = scripted(images)
    expected = _reference(trained, images)
    error = (got - expected).abs().max().item()
    print(f"torchscript batch 3: max abs logit error {error:.3g}")
    assert got.shape == (3, CLASSES) and error < 1e-4
    assert torch.equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize(("mode", "antialias"), [
    pytest.param("bicubic", True, marks=pytest.mark.slow), pytest.param("area", False, marks=pytest.mark.slow),
    pytest.param("nearest", False, marks=pytest.mark.slow),
])  # area (a box filter over partial cells) in the default suite; the other two with -m slow (8 s each)
def test_the_continuous_sampler_exports_in_other_modes(trained, tmp_path, mode, antialias):
    """The default sampler's other modes (their weights are built from the boxes on the device, from shapes
    that do not depend on the batch): ONNX with a dynamic batch, verified against PyTorch on another batch."""
    checkpoint = torch.load(trained, map_location="cpu", weights_only=False)
    checkpoint["hyper_parameters"]["zoom"].update(mode=mode, antialias=antialias)  # the sampler has no parameters
    ckpt = tmp_path / "mode.ckpt"
    torch.save(checkpoint, ckpt)
    path = export(compose_config("export.yaml", [f"ckpt_path={ckpt}", "format=onnx", f"out={tmp_path / 'm.onnx'}"],
                                 tmp_path / "run"))  # verify=true: runs the file on a batch of 3 against PyTorch
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["max_abs_error"] < 1e-4 and meta["model"]["zoom"]["mode"] == mode


def test_an_unexportable_option_is_one_line_naming_the_key(trained, tmp_path, capsys):
    # the same weights with model.zoom.sampler=slice (the sampler has no parameters)
    checkpoint = torch.load(trained, map_location="cpu", weights_only=False)
    checkpoint["hyper_parameters"]["zoom"]["sampler"] = "slice"
    slice_ckpt = tmp_path / "slice.ckpt"
    torch.save(checkpoint, slice_ckpt)
    for fmt in ("onnx", "torchscript"):
        cfg = compose_config("export.yaml", [f"ckpt_path={slice_ckpt}", f"format={fmt}"], tmp_path / fmt)
        with pytest.raises(SystemExit) as exit_info:
            one_line_errors(export)(cfg)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: model.zoom.sampler=slice: cannot be exported to format={fmt}")
        assert "model.zoom.sampler=continuous" in err and err.count("\n") == 1
        assert not (tmp_path / fmt / f"model.{'onnx' if fmt == 'onnx' else 'pt'}").exists()


def test_a_bad_format_is_refused(trained, tmp_path):
    with pytest.raises(ConfigError, match="format=tflite: must be one of"):
        export(compose_config("export.yaml", [f"ckpt_path={trained}", "format=tflite"], tmp_path / "run"))
    with pytest.raises(ConfigError, match="batch_size=0: must be >= 1"):
        export_model(load_model(str(trained)), tmp_path / "m.onnx", "onnx", SIZE, batch_size=0)
