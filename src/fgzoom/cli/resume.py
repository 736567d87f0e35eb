"""Resumable sweeps and scheduler jobs: a sweep job (or a job SLURM requeued or torchrun restarted,
:mod:`fgzoom.cli.cluster`) whose folder already holds a finished run of the same config is not run again; one
that was stopped continues from its newest checkpoint.

Hydra gives every job of a sweep the folder ``<hydra.sweep.dir>/<job number>``, numbered in the order of the
sweep's settings, so running the same command with the same ``hydra.sweep.dir`` again maps every job to its
old folder. :func:`previous_run` decides, per job (``skip_finished``, default true, under ``-m`` or a scheduler):

- ``metrics.json`` present: the job finished; its metrics are returned and nothing is trained;
- else a checkpoint present: the job was stopped; it resumes from the newest of ``checkpoints/last.ckpt``
  and ``hpc_ckpt_<n>.ckpt`` (saved mid-epoch on a requeue signal);
- else: it runs from the start.

The folder's ``config.yaml`` (written when the job started) must describe the same run as the job's config
now, else one line says which key differs: a changed sweep (other seeds, epochs, data) in an old folder
would otherwise mix results of two experiments.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fgzoom.checkpoints.io import trusts_checkpoints
from fgzoom.cli.cluster import newest_checkpoint, scheduler_run_id
from fgzoom.cli.runtime import resolved_container
from fgzoom.errors import ConfigError
from fgzoom.sweeps.config_tree import flatten_config

log = logging.getLogger(__name__)

# keys that do not change what a job computes (or are filled in while it runs), left out of the comparison
IGNORED = ("ckpt_path", "trust_checkpoint", "logger", "skip_finished", "data.mean", "data.std", "optimized_metric")


def is_sweep_job() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def config_difference(saved: dict, current: dict) -> str | None:
    """The first key (dotted) whose value differs between two resolved configs, as ``key: saved vs now``,
    ignoring ``IGNORED``; None when they agree."""
    a, b = flatten_config(saved), flatten_config(current)
    for key in sorted(set(a) | set(b)):
        if any(key == k or key.startswith(k + ".") for k in IGNORED):
            continue
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            return f"{key}: {a.get(key, '<missing>')!r} vs {b.get(key, '<missing>')!r}"
    return None


def previous_run(cfg: DictConfig, output_dir: Path) -> tuple[dict[str, float] | None, str | None]:
    """``(metrics, ckpt_path)`` of what this job's folder already holds (see the module docstring):
    ``(metrics, None)`` for a finished job, ``(None, <newest checkpoint>)`` for a stopped one (the newest of
    ``checkpoints/last.ckpt`` and a requeue's ``hpc_ckpt_<n>.ckpt``, :func:`fgzoom.cli.cluster.newest_checkpoint`),
    ``(None, None)`` otherwise.

    Raises:
        ConfigError: the folder holds a run of another config.
    """
    saved_config = output_dir / "config.yaml"
    metrics_file = output_dir / "metrics.json"
    if not saved_config.is_file():
        return None, None
    saved = OmegaConf.to_container(OmegaConf.load(saved_config), resolve=True)
    difference = config_difference(saved, resolved_container(cfg))
    if difference is not None:
        named = " (named after the scheduler's job)" if output_dir.name == scheduler_run_id() else ""
        key, fix = ("hydra.sweep.dir", "give the sweep a new hydra.sweep.dir") if is_sweep_job() else (
            "hydra.run.dir", f"pass hydra.run.dir=<a new folder>{named}")
        raise ConfigError(
            f"{key}: job folder {output_dir} holds a run of another config ({difference}); "
            f"{fix}, or skip_finished=false to run it again"
        )
    if metrics_file.is_file():
        log.info("%s: finished earlier with the same config; not run again (skip_finished=false reruns it)",
                 output_dir)
        return json.loads(metrics_file.read_text()), None
    newest = newest_checkpoint(output_dir, trust=trusts_checkpoints(cfg))
    if newest is not None:
        log.info("%s: stopped earlier; resuming from %s", output_dir, newest.relative_to(output_dir))
        return None, str(newest)
    return None, None
