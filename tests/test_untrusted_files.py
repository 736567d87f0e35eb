"""Files from someone else never run code: a checkpoint with a pickled payload and a model folder whose saved
data config names a foreign ``_target_`` are refused (or read as values only) by every entry, with no
command from the file executed; genuine files still load exactly as Lightning's own loader loads them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from fgzoom.checkpoints.io import load_model, read_checkpoint
from fgzoom.checkpoints.weights import convert_weights
from fgzoom.cli.evaluate import evaluate
from fgzoom.cli.export import export
from fgzoom.cli.predict import predict
from fgzoom.cli.save_model import save_model
from fgzoom.cli.train import train
from fgzoom.errors import ConfigError, FGZoomError
from fgzoom.models.backbone import BackboneConfig, create_backbone
from fgzoom.models.module import FGVCModule
from tests.helpers import compose_config, run_script_here, tiny_overrides


class ShellPayload:
    """Unpickling this runs ``touch <marker>``: what a hostile file would do with any shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def files(tmp_path_factory, synthetic_root) -> dict[str, Path]:
    """A genuine 1-epoch run, a copy of its last.ckpt with a payload in its ``fgzoom`` entry, the run's model
    folder, and a copy of that folder whose config.yaml ``data`` section loads the hostile checkpoint with the
    full unpickler when instantiated; ``marker`` is the file the payload would create."""
    base = tmp_path_factory.mktemp("untrusted")
    run = base / "run"
    train(compose_config("train.yaml", [*tiny_overrides(synthetic_root), "logger=none"], run))
    genuine = run / "checkpoints" / "last.ckpt"
    marker = base / "payload_ran"
    checkpoint = torch.load(genuine, map_location="cpu", weights_only=True)
    checkpoint["fgzoom"]["extra"] = ShellPayload(marker)
    hostile = base / "hostile.ckpt"
    torch.save(checkpoint, hostile)
    folder = base / "model"
    save_model(compose_config("save_model.yaml", [f"ckpt_path={genuine}", f"out={folder}"], base / "save"))
    hostile_folder = base / "hostile_model"
    shutil.copytree(folder, hostile_folder)
    config = yaml.safe_load((hostile_folder / "config.yaml").read_text())
    config["data"] = {"_target_": "torch.load", "f": str(hostile), "weights_only": False}
    (hostile_folder / "config.yaml").write_text(yaml.safe_dump(config))
    assert not marker.exists()
    return {"run": run, "genuine": genuine, "hostile": hostile, "folder": folder, "hostile_folder": hostile_folder,
            "marker": marker}


def _entries(files: dict[str, Path], source: Path, synthetic_root: Path, out: Path) -> dict[str, object]:
    """Each entry (in-process, as its script calls it) on ``source``, as a thunk."""
    image = sorted((synthetic_root / "test").rglob("*.png"))[0]
    ckpt = f"ckpt_path={source}"
    return {
        "eval": lambda: evaluate(compose_config("eval.yaml", [ckpt, "trainer=cpu", "logger=none", "eval.num_images=0"],
                                                out / "eval")),
        "predict": lambda: predict(compose_config("predict.yaml", [ckpt, f"input={image}"], out / "predict")),
        "export": lambda: export(compose_config("export.yaml", [ckpt, "format=torchscript", "verify=false"],
                                                out / "export")),
        "save_model": lambda: save_model(compose_config("save_model.yaml", [ckpt, f"out={out / 'saved'}"],
                                                        out / "save")),
    }


@pytest.mark.parametrize("entry", ["eval", "predict", "export", "save_model"])
def test_a_checkpoint_with_a_payload_is_refused_in_one_line(files, synthetic_root, tmp_path, entry):
    run_entry = _entries(files, files["hostile"], synthetic_root, tmp_path)[entry]
    with pytest.raises(ConfigError) as refused:
        run_entry()
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"ckpt_path={files['hostile']}: refused")
    assert "system" in message and "trust_checkpoint=true" in message  # names what it holds and the opt-in
    assert not files["marker"].exists()


@pytest.mark.parametrize(("entry", "match"), [
    ("eval", r"saved data config holds keys fgzoom's datamodule does not take \(f, weights_only\)"),
    ("predict", "saved data config has no image_size"),
    ("export", "saved data config has no image_size"),
])
def test_a_model_folder_with_a_foreign_data_target_runs_nothing(files, synthetic_root, tmp_path, entry, match):
    run_entry = _entries(files, files["hostile_folder"], synthetic_root, tmp_path)[entry]
    with pytest.raises(ConfigError, match=match):
        run_entry()
    assert not files["marker"].exists()


def test_a_saved_normalization_is_numbers_only(files, synthetic_root, tmp_path):
    """A nested ``_target_`` in the saved ``mean`` would be built by Hydra once copied into the command line's
    data config: only three numbers pass."""
    folder = tmp_path / "model"
    shutil.copytree(files["folder"], folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["data"]["mean"] = [{"_target_": "os.system", "_args_": [f"touch {files['marker']}"]}, 0.0, 0.0]
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    data = [o for o in tiny_overrides(synthetic_root) if o.startswith("data.")]
    args = [f"ckpt_path={folder}", "trainer=cpu", "logger=none", "eval.num_images=0", "data=synthetic", *data]
    with pytest.raises(ConfigError, match=r"saved data.mean is not three numbers"):
        evaluate(compose_config("eval.yaml", args, tmp_path / "e"))
    assert not files["marker"].exists()


def test_the_foreign_folder_evaluates_on_data_from_the_command_line(files, synthetic_root, tmp_path):
    """eval with ``data=`` needs only the saved normalization: the foreign ``_target_`` is ignored, not built."""
    data = [o for o in tiny_overrides(synthetic_root) if o.startswith("data.")]
    args = [f"ckpt_path={files['hostile_folder']}", "trainer=cpu", "logger=none", "eval.num_images=0",
            "data=synthetic", *data]
    evaluate(compose_config("eval.yaml", args, tmp_path / "e"))
    assert (tmp_path / "e" / "metrics.json").is_file() and not files["marker"].exists()


def test_resuming_from_a_payload_or_a_folder_is_one_line(files, synthetic_root, tmp_path):
    overrides = [*tiny_overrides(synthetic_root), "logger=none", "trainer.max_epochs=2"]
    with pytest.raises(ConfigError, match=r"hostile.ckpt: refused, .*pass trust_checkpoint=true"):
        train(compose_config("train.yaml", [*overrides, f"ckpt_path={files['hostile']}"], tmp_path / "a"))
    with pytest.raises(ConfigError, match="a model folder holds the weights only"):
        train(compose_config("train.yaml", [*overrides, f"ckpt_path={files['folder']}"], tmp_path / "b"))
    assert not files["marker"].exists() and not (tmp_path / "a" / "metrics.json").exists()


def test_eval_script_prints_the_refusal_as_one_error_line(files, tmp_path):
    result = run_script_here("eval.py", f"ckpt_path={files['hostile']}", "trainer=cpu",
                        f"hydra.run.dir={tmp_path / 'e'}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: ckpt_path={files['hostile']}: refused") and "Traceback" not in result.stderr
    assert not files["marker"].exists()


def test_foreign_weights_with_a_payload_are_refused(files, tmp_path):
    """``model.backbone.pretrained_path`` and ``scripts/convert_weights.py`` read weights-only too (timm's loader)."""
    weights = create_backbone(BackboneConfig(name="resnet18"), num_classes=4).state_dict()
    weights["extra"] = ShellPayload(files["marker"])
    path = tmp_path / "weights.pth"
    torch.save(weights, path)
    with pytest.raises(ConfigError, match=r"pretrained_path=.*weights.pth: cannot load into 'resnet18'"):
        create_backbone(BackboneConfig(name="resnet18", pretrained_path=str(path)), num_classes=4)
    with pytest.raises(FGZoomError, match=r"weights.pth: cannot read weights"):
        convert_weights(path, tmp_path / "out.safetensors", "resnet18")
    assert not files["marker"].exists()


def test_genuine_files_load_as_lightning_loads_them(files):
    """The weights-only rebuild equals Lightning's own ``load_from_checkpoint`` (the loader before this change)
    and the model folder, bit for bit."""
    genuine = str(files["genuine"])
    before = FGVCModule.load_from_checkpoint(genuine, map_location="cpu", weights_only=False).eval()
    now, folder = load_model(genuine).eval(), load_model(str(files["folder"])).eval()
    assert now.state_dict().keys() == before.state_dict().keys()
    for key, value in before.state_dict().items():
        assert torch.equal(now.state_dict()[key], value), key
    assert now.net.progress == before.net.progress
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = before(x)["logits"]
        assert torch.equal(now(x)["logits"], expected) and torch.equal(folder(x)["logits"], expected)


def test_trust_checkpoint_reads_with_the_full_unpickler_and_says_so(files, caplog):
    checkpoint = read_checkpoint(str(files["genuine"]), trust=True)
    assert "trust_checkpoint=true" in caplog.text and "runs any code" in caplog.text
    assert checkpoint["fgzoom"]["class_names"] == json.loads((files["folder"] / "fgzoom.json").read_text())["class_names"]
