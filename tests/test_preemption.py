"""Runs that survive the cluster: the run folder a requeued or restarted job finds again, the requeue signal
handled at a batch boundary, and the exact resume from a checkpoint saved in the middle of an epoch."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning import Callback
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from fgzoom.callbacks.preemption import RunRequeued, next_hpc_path
from fgzoom.cli.cluster import newest_checkpoint, run_name, scheduler_run_id
from fgzoom.cli.train import train
from fgzoom.data.seeding import EpochSeededSampler
from fgzoom.errors import ConfigError
from tests.helpers import (
    ROOT,
    SCRIPT_ENV,
    add_trainer_callbacks,
    compose_config,
    run_script,
    script_command,
    tiny_overrides,
)


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "fgvc"}, "slurm-4242"),
    ({"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "fgvc", "SLURM_STEP_ID": "1"}, "slurm-4242"),  # every srun step
    ({"SLURM_JOB_ID": "4243", "SLURM_JOB_NAME": "fgvc", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "3"},
     "slurm-4240_3"),
    ({"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "bash"}, None),  # an interactive allocation: the clock
    ({"TORCHELASTIC_RUN_ID": "none"}, None),
    ({"TORCHELASTIC_RUN_ID": "a1b2/c3"}, "elastic-a1b2_c3"),
], ids=["none", "slurm", "srun-step", "array", "interactive", "elastic-unset", "elastic"])
def test_the_run_folder_is_named_after_the_scheduler_job(env, expected):
    assert scheduler_run_id(env) == expected


def test_only_training_takes_the_scheduler_name(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_JOB_NAME", "fgvc")
    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    assert run_name("train") == "slurm-77"
    assert run_name("eval", "%Y") == str(__import__("datetime").date.today().year)  # two evals, two folders


def test_the_sampler_shards_as_lightnings_wrapper_did_and_resumes_inside_an_epoch():
    """With 2 ranks each rank gets what Lightning's DistributedSamplerWrapper gave it from the unsharded sampler
    (the data order of DDP runs is unchanged); ``resume_at`` drops exactly the entries already trained on."""
    for size in (10, 11):
        single = EpochSeededSampler(size, seed=3)
        for rank in (0, 1):
            wrapper = DistributedSamplerWrapper(single, num_replicas=2, rank=rank, shuffle=False)
            own = EpochSeededSampler(size, seed=3, num_replicas=2, rank=rank)
            for epoch in (0, 4):
                wrapper.set_epoch(epoch)
                own.set_epoch(epoch)
                assert list(own) == list(wrapper) and len(own) == len(wrapper)
    sampler = EpochSeededSampler(10, seed=3)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.resume_at(2, 4)
    sampler.set_epoch(2)  # Lightning sets the same epoch again before iterating: the skip stays
    assert list(sampler) == whole[4:] and len(sampler) == 10
    sampler.set_epoch(3)  # the next epoch is whole
    assert len(list(sampler)) == 10


def test_the_newest_checkpoint_is_the_furthest_into_training(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    torch.save({"global_step": 10, "epoch": 1}, checkpoints / "last.ckpt")
    assert newest_checkpoint(tmp_path) == checkpoints / "last.ckpt"
    torch.save({"global_step": 13, "epoch": 2}, next_hpc_path(checkpoints))
    assert newest_checkpoint(tmp_path) == checkpoints / "hpc_ckpt_1.ckpt"
    assert next_hpc_path(checkpoints).name == "hpc_ckpt_2.ckpt"
    torch.save({"global_step": 14, "epoch": 2}, tmp_path / "hpc_ckpt_1.ckpt")  # Lightning's own handler's file
    assert newest_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_1.ckpt"
    torch.save({"global_step": 14, "epoch": 2}, checkpoints / "last.ckpt")  # a tie: the validated one
    assert newest_checkpoint(tmp_path) == checkpoints / "last.ckpt"
    assert newest_checkpoint(tmp_path / "empty") is None


def test_a_bad_signal_name_is_one_line():
    from fgzoom.callbacks.preemption import PreemptionCheckpoint

    with pytest.raises(ConfigError, match="callbacks.preemption.signal_name=SIGNOPE: not a signal"):
        PreemptionCheckpoint("SIGNOPE")


class _SignalAt(Callback):
    """Sends the requeue signal to this process at the start of (epoch, batch), as SLURM would."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture
def slurm(tmp_path, monkeypatch) -> Path:
    """A simulated SLURM job 4242 (one task) with a stand-in ``scontrol`` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "fgvc", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}.items():
        monkeypatch.setenv(key, value)
    for key in ("SLURM_STEP_ID", "SLURM_ARRAY_JOB_ID", "SLURM_NTASKS_PER_NODE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    return calls


@pytest.mark.parametrize(("batch", "where"), [
    (2, {"epoch": 1, "samples": 3 * 4, "world_size": 1}),
    pytest.param(4, {"epoch": 1, "samples": 5 * 4, "world_size": 1}, marks=pytest.mark.slow),  # the same path
], ids=["mid-epoch", "last-batch"])
def test_requeue_signal_then_resume_equals_the_uninterrupted_run(tmp_path, synthetic_root, slurm, monkeypatch,
                                                                  batch, where):
    """SIGUSR1 in epoch 1: a checkpoint at that batch's end (on the epoch's last batch: after its validation),
    ``scontrol requeue 4242``, the fit stops without metrics; the same command again (the requeued job) resumes
    from it and reports what a run that was never stopped reports, with the EMA, mixup and model-side
    randomness all in play."""
    common = [*tiny_overrides(synthetic_root), "trainer.max_epochs=3", "model.backbone.drop_rate=0.2",
              "model.ema.decay=0.8", "data.mixup.mixup_alpha=0.8", "figures_every_n_epochs=0"]
    reference = train(compose_config("train.yaml", common, tmp_path / "reference"))

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        add_trainer_callbacks(patch, _SignalAt(epoch=1, batch=batch))
        with pytest.raises(RunRequeued):
            train(compose_config("train.yaml", common, run))
    assert slurm.read_text().split() == ["requeue", "4242"]
    saved = torch.load(run / "checkpoints" / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1 and saved["FGVCDataModule"] == where  # 5 batches of 4 in an epoch
    assert not (run / "metrics.json").exists()

    assert train(compose_config("train.yaml", common, run)) == reference  # the requeued job
    assert (run / "metrics.json").is_file()
    assert train(compose_config("train.yaml", common, run)) == reference  # finished: not trained again


def test_a_launchers_own_handler_requeues_after_the_save(tmp_path, synthetic_root, slurm, monkeypatch):
    """A handler that had the signal before (submitit's, with ``signal_name=SIGUSR2``) is called after the
    checkpoint is written, instead of ``scontrol requeue``: the launcher requeues its job its own way."""
    called = []

    def launcher(signum, frame):
        called.append((signum, (tmp_path / "run" / "checkpoints" / "hpc_ckpt_1.ckpt").is_file()))

    previous = signal.signal(signal.SIGUSR1, launcher)
    try:
        with monkeypatch.context() as patch:
            add_trainer_callbacks(patch, _SignalAt(epoch=0, batch=1))
            with pytest.raises(RunRequeued):
                train(compose_config("train.yaml", [*tiny_overrides(synthetic_root), "logger=none",
                                                    "figures_every_n_epochs=0"], tmp_path / "run"))
        assert called == [(signal.SIGUSR1, True)] and not slurm.exists()
        assert signal.getsignal(signal.SIGUSR1) is launcher  # handed back
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_the_callback_stays_out_where_it_has_nothing_to_do(train_cfg):
    """Outside SLURM, or with checkpointing off, the callback is not attached (it is a Checkpoint callback)."""
    from fgzoom.callbacks.preemption import PreemptionCheckpoint
    from fgzoom.cli.train import build

    _, _, trainer = build(train_cfg)
    assert not any(isinstance(c, PreemptionCheckpoint) for c in trainer.callbacks)
    assert not PreemptionCheckpoint.applies({"enable_checkpointing": False})


def test_a_requeued_job_in_a_folder_of_another_run_is_one_line(tmp_path, synthetic_root, slurm):
    run = tmp_path / "run"
    common = [*tiny_overrides(synthetic_root), "logger=none", "figures_every_n_epochs=0"]
    train(compose_config("train.yaml", [*common, "seed=1"], run))
    with pytest.raises(ConfigError, match=r"hydra.run.dir: job folder .* holds a run of another config \(seed: 1 vs 2\)"):
        train(compose_config("train.yaml", [*common, "seed=2"], run))


# ---------------------------------------------------------------------------------------------- real processes
def _slurm_env(job: str, scontrol_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in SCRIPT_ENV.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    env.update(SLURM_JOB_ID=job, SLURM_NTASKS="1", SLURM_JOB_NAME="fgvc", SLURM_PROCID="0", SLURM_LOCALID="0",
               SLURM_NODEID="0", SLURM_NODELIST="localhost", PATH=f"{scontrol_dir}{os.pathsep}{env['PATH']}")
    return env


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert path.exists() and process.poll() is None, f"{path} never appeared while the run was going"


def _close(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-6 for k in a)


@pytest.mark.slow
def test_sbatch_requeue_simulation_resumes_exactly_in_one_folder(tmp_path, synthetic_root):
    """The issue's simulation: SLURM variables set, a stand-in scontrol, SIGUSR1 a moment after the first
    last.ckpt, kill -9 (what SLURM does to the requeued job), the same command again. One run folder, named
    after the job; the requeued job restores the saved state and ends with the uninterrupted run's metrics."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    logs = tmp_path / "logs"
    common = [*tiny_overrides(synthetic_root), "trainer.max_epochs=6", "data.batch_size=2", "data.num_workers=2",
              "model.backbone.drop_rate=0.2", "logger=csv", "figures_every_n_epochs=0", f"paths.log_dir={logs}"]
    reference = run_script("train.py", *common, env=_slurm_env("4241", bin_dir))
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = json.loads((logs / "train" / "runs" / "slurm-4241" / "metrics.json").read_text())

    run = logs / "train" / "runs" / "slurm-4242"
    process = subprocess.Popen(script_command("train.py", *common), cwd=ROOT, env=_slurm_env("4242", bin_dir),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(run / "checkpoints" / "last.ckpt", process)
    time.sleep(0.5)
    process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "hpc_ckpt_1.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run / "checkpoints" / "hpc_ckpt_1.ckpt").is_file() and not (run / "metrics.json").exists()
    assert calls.read_text().split() == ["requeue", "4242"]

    requeued = run_script("train.py", *common, env=_slurm_env("4242", bin_dir))
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert "Restored all states" in requeued.stderr and "hpc_ckpt_1.ckpt" in requeued.stderr
    assert sorted(p.name for p in (logs / "train" / "runs").iterdir()) == ["slurm-4241", "slurm-4242"]
    assert _close(json.loads((run / "metrics.json").read_text()), expected)


@pytest.mark.slow
def test_torchrun_restart_of_a_killed_worker_resumes_in_the_same_folder(tmp_path, synthetic_root):
    """``torchrun --standalone --max-restarts=1``, 2 CPU processes over gloo, one worker killed after the first
    epoch's checkpoint: the restarted workers find the run folder (named after the torchelastic run id) and
    resume; the metrics are those of an uninterrupted 2-process run."""
    common = [*tiny_overrides(synthetic_root), "trainer=ddp_cpu", "trainer.max_epochs=4", "data.num_workers=0",
              "logger=csv", "figures_every_n_epochs=0"]
    env = {k: v for k, v in SCRIPT_ENV.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}

    def torchrun(logs: Path) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                "--max-restarts=1", str(ROOT / "scripts" / "train.py"), *common, f"paths.log_dir={logs}"]

    def the_run(logs: Path) -> Path:
        runs = list((logs / "train" / "runs").iterdir())
        assert len(runs) == 1 and runs[0].name.startswith("elastic-"), runs
        return runs[0]

    reference = subprocess.run(torchrun(tmp_path / "reference"), cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = json.loads((the_run(tmp_path / "reference") / "metrics.json").read_text())

    logs = tmp_path / "restarted"
    agent = subprocess.Popen(torchrun(logs), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.monotonic() + 300
    while not list(logs.glob("train/runs/*/checkpoints/last.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2 and agent.poll() is None, workers
    os.kill(int(workers[-1]), signal.SIGKILL)
    output, _ = agent.communicate(timeout=600)
    assert agent.returncode == 0, output[-3000:]
    assert "Restored all states" in output and "resuming from checkpoints/last.ckpt" in output
    assert _close(json.loads((the_run(logs) / "metrics.json").read_text()), expected)
