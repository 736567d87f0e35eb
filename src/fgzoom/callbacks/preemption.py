"""The requeue signal of a SLURM job, handled at a batch boundary: save ``checkpoints/hpc_ckpt_<n>.ckpt``,
requeue, stop.

SLURM sends the signal named in ``#SBATCH --signal=SIGUSR1@90`` some seconds before it ends a job (time limit
or preemption). Lightning's own handler saves the checkpoint inside the signal handler, at whatever Python
line the process is on: in the middle of an optimizer step the saved weights are half updated, and the
position inside the epoch is not saved in a form the data can resume from. This callback only notes the
signal (from the start of training to its end); at the end of the next training batch that completes an
optimizer step (after every other callback has run its batch-end work, e.g. the EMA update: Lightning runs
``Checkpoint`` callbacks last), all ranks
agree, save ``<run dir>/checkpoints/hpc_ckpt_<n>.ckpt`` with Lightning's ``trainer.save_checkpoint`` (the
loops' progress and the training loader's position in its epoch included: the datamodule's ``state_dict``),
rank 0 runs ``scontrol requeue <job>``, and the fit stops with :class:`RunRequeued` (the script exits with
status 3). The requeued job finds the same run folder (:mod:`fgzoom.cli.cluster`) and resumes from that file
exactly. The file sits in ``checkpoints/``, not in the run folder where Lightning looks for its own
``hpc_ckpt_*`` files: under SLURM Lightning loads those by itself for any fit, validate or test given no
path.

Active only where Lightning detects SLURM (``SLURMEnvironment.detect()``, not an interactive allocation).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Checkpoint

from fgzoom.errors import ConfigError

log = logging.getLogger(__name__)


HPC_PATTERN = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")  # Lightning's name of a requeue checkpoint


def slurm_job_id(env: Mapping[str, str] | None = None) -> str | None:
    """``SLURM_JOB_ID``, or ``<array job>_<task>`` for an array task (what ``scontrol requeue`` takes); None
    outside SLURM."""
    env = os.environ if env is None else env
    array_job, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else env.get("SLURM_JOB_ID") or None


def next_hpc_path(folder: Path) -> Path:
    """``<folder>/hpc_ckpt_<n>.ckpt`` with ``n`` one above the largest there (Lightning's naming)."""
    numbers = [int(m.group(1)) for p in folder.glob("hpc_ckpt_*.ckpt") if (m := HPC_PATTERN.match(p.name))]
    return folder / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


class RunRequeued(Exception):  # noqa: N818  (a stop, not an error)
    """The fit stopped after saving its state for the requeued job (``path``); not a failure."""

    def __init__(self, path: Path, job: str | None) -> None:
        super().__init__(f"saved {path} and requeued SLURM job {job}; the requeued job resumes from it")
        self.path, self.job = path, job


def requeue(job: str) -> None:
    """``scontrol requeue <job>``; a failure is one warning line (the checkpoint is saved either way)."""
    if not re.fullmatch(r"[0-9_]+", job):
        log.warning("not requeueing: SLURM job id %r is not a job number", job)
        return
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("scontrol requeue %s failed (%s); resubmit the job to resume", job, e)
        return
    if result.returncode != 0:
        log.warning("scontrol requeue %s failed (exit %d: %s); resubmit the job to resume", job, result.returncode,
                    result.stderr.strip()[:200])
    else:
        log.info("requeued SLURM job %s", job)


def launcher_handler(handler: Any) -> bool:
    """Whether ``handler`` (what the signal did before this callback took it) is a job launcher's own Python
    handler, such as submitit's requeue, rather than the default action, Lightning's or a stale one of ours."""
    owner = getattr(handler, "__self__", handler)
    module = getattr(handler, "__module__", None) or type(owner).__module__
    return callable(handler) and not str(module).startswith(("fgzoom", "lightning"))


class PreemptionCheckpoint(Checkpoint):
    """On the requeue signal, save and requeue at the next optimizer-step boundary (module docstring).

    A ``Checkpoint`` subclass so that Lightning runs its batch-end hook after every other callback's (the
    EMA's update of that batch is in the file). ``fgzoom.cli.train.build`` attaches it only where it acts: under
    SLURM, with checkpointing enabled.

    A signal noted on an epoch's last batch (or during its validation) is acted on at the epoch's end, after
    the validation: the saved state is that of a finished epoch, as ``last.ckpt`` is. When another Python
    handler had the signal before (submitit's, with ``signal_name=SIGUSR2``), it is called after the save
    instead of ``scontrol requeue``, so that the launcher requeues its job its own way.

    Args:
        signal_name: the signal of ``#SBATCH --signal`` (``SIGUSR1``, Lightning's default).
        requeue: requeue the job after saving (false: save and stop only, e.g. when the job script
            resubmits itself).
    """

    def __init__(self, signal_name: str = "SIGUSR1", requeue: bool = True) -> None:
        name = str(signal_name).upper()
        if name not in signal.Signals.__members__:
            raise ConfigError(f"callbacks.preemption.signal_name={signal_name}: not a signal of this system "
                              "(e.g. SIGUSR1, SIGUSR2, SIGTERM)")
        self.signal = signal.Signals[name]
        self.requeue = requeue
        self.requested = False
        self._previous: Any = None
        self._active = False

    @staticmethod
    def applies(trainer_config: Mapping | None = None) -> bool:
        """Whether the callback has anything to do in this process: SLURM is detected (not an interactive
        allocation) and the trainer keeps checkpoints (``trainer.enable_checkpointing`` not false)."""
        enabled = (trainer_config or {}).get("enable_checkpointing", True) is not False
        return enabled and SLURMEnvironment.detect()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Take the signal for the training loop, under SLURM. Lightning has registered its handlers by now
        (its SLURM one saves inside the handler, at any line); its teardown puts back what was there before."""
        if not SLURMEnvironment.detect():
            return
        self.requested = False
        self._previous = signal.signal(self.signal, self._note)
        self._active = True
        log.info("SLURM job %s: %s saves a checkpoint at the next batch end%s", slurm_job_id(), self.signal.name,
                 " and requeues the job" if self.requeue else "")

    def _note(self, signum: int, frame: Any) -> None:
        self.requested = True  # no logging here: a handler can interrupt a log call (reentrant I/O)

    def _restore_handler(self) -> None:
        if self._active:
            signal.signal(self.signal, self._previous if self._previous is not None else signal.SIG_DFL)
            self._active = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handler()  # before Lightning's teardown restores the handlers it found

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handler()  # the exception path skips on_train_end

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._active:
            return
        if batch_idx + 1 >= trainer.num_training_batches:  # the epoch's end: after its validation instead
            return
        if (batch_idx + 1) % trainer.accumulate_grad_batches != 0:  # mid-accumulation: gradients not saved
            return
        self._save_if_requested(trainer, f"epoch {trainer.current_epoch}, batch {batch_idx}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active:  # the epoch's validation (and its last.ckpt) has run: an epoch-end state
            self._save_if_requested(trainer, f"end of epoch {trainer.current_epoch}")

    def _save_if_requested(self, trainer: L.Trainer, where: str) -> None:
        """All ranks agree on whether the signal came; if so save, requeue and stop the fit."""
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        path = next_hpc_path(Path(trainer.default_root_dir) / "checkpoints")
        path = Path(trainer.strategy.broadcast(str(path)))  # one name on every rank
        trainer.save_checkpoint(path)
        job = slurm_job_id()
        if trainer.is_global_zero:
            log.info("received %s: saved %s (%s, step %d)", self.signal.name, path, where, trainer.global_step)
        previous = self._previous
        self._restore_handler()
        if self.requeue and launcher_handler(previous):  # e.g. submitit's: it requeues its job its own way
            previous(self.signal, None)
        elif self.requeue and job and trainer.is_global_zero:
            requeue(job)
        raise RunRequeued(path, job)
