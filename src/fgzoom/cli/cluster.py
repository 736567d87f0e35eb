"""Runs a scheduler restarts: the run folder a requeued or restarted job finds again, and the checkpoint it
resumes from.

A SLURM job that is preempted and requeued, or a ``torchrun --max-restarts`` worker group that is restarted,
runs the same command again. Left to the clock (``${now:...}``), ``hydra.run.dir`` would resolve to a new
folder and the run would start over. :func:`run_name` (the ``${fgzoom.run_name:<task>,<strftime format>}`` resolver
of ``configs/hydra/default.yaml``) names a training run's folder after the scheduler's identity instead, the
same for every rank of a job and for every restart of it:

- SLURM: ``slurm-<SLURM_JOB_ID>`` (array jobs ``slurm-<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>``); a second
  training of another config in the same job finds the first's ``config.yaml`` and stops with one line
  (pass it its own ``hydra.run.dir``), rather than mixing two runs;
- torchelastic (``torchrun``): ``elastic-<TORCHELASTIC_RUN_ID>`` (set by ``--rdzv-id`` or ``--standalone``);
- otherwise the clock, as before.

An explicit ``hydra.run.dir`` still wins; sweeps keep ``<sweep dir>/<job number>``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import lightning as L
import torch.distributed as dist
from lightning.pytorch.strategies import ParallelStrategy
from omegaconf import OmegaConf

from fgzoom.callbacks.preemption import HPC_PATTERN, slurm_job_id
from fgzoom.checkpoints.io import read_checkpoint

log = logging.getLogger(__name__)

RESOLVER = "fgzoom.run_name"


def scheduler_run_id(env: Mapping[str, str] | None = None) -> str | None:
    """The identity a scheduler gives this run, stable across requeues and restarts (module docstring), or
    None when no scheduler started it."""
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID") and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return f"slurm-{slurm_job_id(env)}"
    elastic = env.get("TORCHELASTIC_RUN_ID")
    if elastic and elastic.lower() != "none":
        return f"elastic-{re.sub(r'[^A-Za-z0-9_.-]', '_', elastic)}"
    return None


RESUMING_TASKS = ("train",)  # tasks whose restarted job continues the run; eval/predict keep clock folders


def run_name(task_name: str = "train", time_format: str = "%Y-%m-%d_%H-%M-%S") -> str:
    """The run folder's name: :func:`scheduler_run_id` for a task that resumes (training), else the current time
    in ``time_format`` (two evaluations in one batch script must not share a folder)."""
    name = scheduler_run_id() if task_name in RESUMING_TASKS else None
    return name or datetime.now().strftime(time_format)


def register_resolvers() -> None:
    """Make ``${fgzoom.run_name:<task>,<format>}`` available to the configs (once per process; cached, like
    Hydra's ``now``, so one process resolves one name)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, run_name, use_cache=True)


def resumable_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints a restarted run of ``run_dir`` may continue from: ``checkpoints/hpc_ckpt_<n>.ckpt``
    (saved on the requeue signal, :class:`fgzoom.callbacks.preemption.PreemptionCheckpoint`), Lightning's own
    ``hpc_ckpt_<n>.ckpt`` in the run folder (its handler, where ours is switched off) and
    ``checkpoints/last.ckpt`` (every validation)."""
    found = [p for folder in (run_dir / "checkpoints", run_dir) for p in folder.glob("hpc_ckpt_*.ckpt")
             if HPC_PATTERN.match(p.name)]
    last = run_dir / "checkpoints" / "last.ckpt"
    return [*found, last] if last.is_file() else found


def newest_checkpoint(run_dir: Path, trust: bool = False) -> Path | None:
    """The checkpoint of ``run_dir`` that is furthest into training (by optimizer step, then epoch; a tie goes
    to ``last.ckpt``, whose epoch was validated), or None when there is none. Read weights-only
    (``trust``: ``trust_checkpoint=true``)."""
    best, best_key = None, None
    for path in resumable_checkpoints(run_dir):
        checkpoint = read_checkpoint(str(path), trust=trust, mmap=True)
        key = (int(checkpoint.get("global_step", 0)), int(checkpoint.get("epoch", 0)), path.name == "last.ckpt")
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best


def init_restarted_process_group(trainer: L.Trainer) -> None:
    """Under a ``torchrun`` restart (``TORCHELASTIC_RESTART_COUNT`` > 0), start the default process group on
    the agent's store under a prefix of this restart, before Lightning starts it.

    torch 2.14's elastic agent keeps one store for all restarts of a worker group, and
    ``init_process_group("env://")`` reads the peers' addresses under the same keys every time: a restarted
    rank may read the address of the worker that died and fail (gloo: ``connectFullMesh failed ... Connection
    refused``), depending on which rank writes first. Lightning leaves an initialized group as it is. The
    first attempt, runs without the agent's shared store and runs not under torchrun are untouched; the
    timeout is torch's default (``default_pg_timeout``), as Lightning's ``DDPStrategy`` uses unless told otherwise.
    """
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    strategy = trainer.strategy
    if attempt == 0 or not isinstance(strategy, ParallelStrategy) or trainer.world_size < 2:
        return
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):  # no shared store: nothing stale to read
        return
    if not dist.is_available() or dist.is_initialized():
        return
    backend = getattr(strategy, "process_group_backend", None) or (
        "nccl" if strategy.root_device.type == "cuda" else "gloo")
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    timeout = dist.default_pg_timeout  # Lightning's DDPStrategy default too
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          timeout=timeout)
    dist.init_process_group(backend, store=dist.PrefixStore(f"fgzoom/restart_{attempt}/default_pg", store),
                            rank=rank, world_size=world, timeout=timeout)
    log.info("torchrun restart %d: process group started on the agent's store under this restart's prefix", attempt)
