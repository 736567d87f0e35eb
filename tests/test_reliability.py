"""Reliability: config errors as one line, exact resume after SIGKILL, atomic checkpoints, NaN guard."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from fgzoom.checkpoints.io import AtomicCheckpointIO
from fgzoom.cli.train import train
from fgzoom.errors import NonFiniteLossError
from tests.helpers import (
    ROOT,
    SCRIPT_ENV,
    add_trainer_callbacks,
    compose_config,
    run_script,
    run_script_here,
    script_command,
    tiny_overrides,
)

# (overrides, text the one-line message must contain: the key and the value or the allowed values)
BAD_CONFIGS = [
    (["model.zoom.mode=bilinearr"], ["model.zoom.mode", "bilinearr", "bicubic"]),
    (["model.zoom.mode=nearest", "model.zoom.align_corners=true"], ["model.zoom.align_corners", "nearest"]),
    (["model.zoom.mode=area", "model.zoom.antialias=true"], ["model.zoom.antialias", "area"]),
    (["model.zoom.threshold=1.5"], ["model.zoom.threshold", "1.5"]),
    (["model.zoom.padding=-0.1"], ["model.zoom.padding", "-0.1"]),
    (["model.zoom.scale_factor=2.0"], ["model.zoom.scale_factor", "glimpse"]),
    (["model.zoom.stage=9"], ["model.zoom.stage", "9"]),
    (["model.backbone.name=resnet5O"], ["model.backbone.name", "resnet5O", "resnet50"]),
    (["data=cub200"], ["data.root"]),
    (["ckpt_path=/no/such/last.ckpt"], ["ckpt_path=/no/such/last.ckpt"]),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_CONFIGS, ids=[o[0] for o, _ in BAD_CONFIGS])
def test_bad_config_exits_with_one_line_naming_the_key(overrides, expected, tmp_path):
    result = run_script_here("train.py", *overrides, f"hydra.run.dir={tmp_path}")
    code, err = result.returncode, result.stderr
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    assert not (tmp_path / "checkpoints").exists()  # nothing was built


def test_offline_pretrained_request_exits_at_once_naming_pretrained_path(tmp_path, synthetic_root):
    env = {"HF_HOME": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"}

    result = run_script("train.py", *tiny_overrides(synthetic_root), "model.backbone.pretrained=true",
                        f"hydra.run.dir={tmp_path}", timeout=120, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: model.backbone.pretrained=true")
    assert "model.backbone.pretrained_path=" in result.stderr
    assert not (tmp_path / "checkpoints").exists()  # failed before anything was built or trained


def test_atomic_checkpoint_write_keeps_the_previous_file_when_interrupted(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def killed_mid_write(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise KeyboardInterrupt  # stands for the process dying mid-write

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, synthetic_root, monkeypatch):
    run = tmp_path / "run"
    overrides = [*tiny_overrides(synthetic_root), "model=plain", "trainer.max_epochs=2"]
    from fgzoom.models.module import FGVCModule

    forward = FGVCModule.forward

    def poisoned(self, images, **options):  # the second epoch diverges
        out = forward(self, images, **options)
        if self.training and self.current_epoch == 1:
            out = {**out, "logits_raw": out["logits_raw"] * float("nan")}
        return out

    monkeypatch.setattr(FGVCModule, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="training loss is nan at epoch 1.*last.ckpt"):
        train(compose_config("train.yaml", overrides, run))
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
def test_sigkill_after_first_checkpoint_then_resume_equals_uninterrupted_run(tmp_path, synthetic_root):
    common = [
        *tiny_overrides(synthetic_root),
        "trainer.max_epochs=6",
        "data.num_workers=2",  # augmentation runs in worker processes, recreated on resume
        "model.backbone.drop_rate=0.2",  # model-side randomness too (plus the zoom threshold draw)
        "figures_every_n_epochs=0",
    ]
    reference = run_script("train.py", *common, f"hydra.run.dir={tmp_path / 'reference'}")
    assert reference.returncode == 0, reference.stderr[-2000:]

    run = tmp_path / "killed"
    process = subprocess.Popen(
        script_command("train.py", *common, f"hydra.run.dir={run}"), cwd=ROOT, env=SCRIPT_ENV,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "metrics.json").exists()

    resumed = run_script("train.py", *common, f"hydra.run.dir={run}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert json.loads((run / "metrics.json").read_text()) == expected


@pytest.mark.slow
def test_ddp_cpu_two_processes_write_one_run_folder(tmp_path, synthetic_root):
    logs = tmp_path / "logs"  # the default run folder logs/train/runs/<time>: ranks must not make two
    result = run_script(
        "train.py", *tiny_overrides(synthetic_root), "trainer=ddp_cpu", "trainer.max_epochs=1", f"paths.log_dir={logs}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = list((logs / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert 0.0 <= metrics["val/acc"] <= 1.0 and 0.0 <= metrics["test/acc"] <= 1.0
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()
    assert (runs[0] / "train_ddp_process_1.log").is_file()  # rank 1 ran, into the same folder


# the practitioner switches that carry state across steps: the EMA (its average and update count), the optimizer's
# layer-wise groups, the mixup draws (a function of the batch, not of generator state)
RESUMABLE_SWITCHES = {
    "ema": ["model.ema.decay=0.8"],
    "layer_decay": ["model.optimizer.layer_decay=0.7", "model.optimizer.lr_mult_new=5"],
    "mixup": ["data.mixup.mixup_alpha=0.8", "data.mixup.cutmix_alpha=1.0", "data.mixup.mode=elem"],
}


class _Killed(Exception):
    pass


class _KillAtEpoch(Callback):
    """Stops the fit at the start of ``epoch``, after the previous epoch's last.ckpt was written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Killed


# one whole kill-and-resume run each: the EMA in the default suite, the others in the slow one
@pytest.mark.parametrize("switch", [s if s == "ema" else pytest.param(s, marks=pytest.mark.slow) for s in RESUMABLE_SWITCHES])
def test_switch_state_resumes_exactly(tmp_path, synthetic_root, switch, monkeypatch):
    """In-process and fast (the SIGKILL test above is the slow, real one): stopped after epoch 0, resumed
    with ckpt_path=last in the same folder, the run reports what the uninterrupted run reports."""
    common = [*tiny_overrides(synthetic_root), "trainer.max_epochs=2", "model.backbone.drop_rate=0.2",
              "figures_every_n_epochs=0", *RESUMABLE_SWITCHES[switch]]
    reference = train(compose_config("train.yaml", common, tmp_path / "reference"))

    run = tmp_path / "killed"
    with monkeypatch.context() as patch:
        add_trainer_callbacks(patch, _KillAtEpoch(1))
        with pytest.raises(_Killed):
            train(compose_config("train.yaml", common, run))
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 0
    assert train(compose_config("train.yaml", [*common, "ckpt_path=last"], run)) == reference
