"""The jobs a sweep launches, from the ``multirun.yaml`` Hydra saved in the sweep folder.

Hydra's ``BasicSweeper`` turns ``hydra.sweeper.params`` and the command line into one override list per job;
:func:`expand_sweep` calls that very code (``BasicSweeper.split_arguments``, a static method) on the same
overrides, parsed by Hydra's ``OverridesParser``, so the job numbers match the folders the sweep wrote. An
Optuna study draws its trials as it runs, so it has no list of jobs in advance.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from fgzoom.errors import SummaryError

log = logging.getLogger("fgzoom.summarize")

OPTUNA_RESULTS = "optimization_results.yaml"  # the Optuna sweeper's best trial, in the sweep folder


def is_optuna(sweeper: object) -> bool:
    """True when ``sweeper`` (a ``hydra.sweeper`` config as a dict) is the Optuna sweeper."""
    return isinstance(sweeper, dict) and str(sweeper.get("_target_", "")).endswith("OptunaSweeper")


def expected_jobs(sweep_dir: Path) -> list[list[str]] | None:
    """The override list of every job the sweep launches, in job-number order, as Hydra's BasicSweeper
    expands ``hydra.sweeper.params`` and the command line saved in ``multirun.yaml``; None when that is
    unknown: no ``multirun.yaml`` (the Optuna sweeper writes none), an Optuna study (its trials are
    drawn as it runs), or another sweeper."""
    path = sweep_dir / "multirun.yaml"
    if (sweep_dir / OPTUNA_RESULTS).is_file() or not path.is_file():
        return None
    hydra_cfg = OmegaConf.load(path).get("hydra", {})
    sweeper = hydra_cfg.get("sweeper", {})
    if is_optuna(sweeper):
        return None
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        log.warning(
            "%s: sweeper %s is not BasicSweeper; cannot list jobs that never started",
            path,
            sweeper.get("_target_"),
        )
        return None
    arguments = list(hydra_cfg.get("overrides", {}).get("task", []))
    try:
        return expand_sweep(dict(sweeper.get("params") or {}), arguments)
    except Exception as e:  # an unusual sweep syntax: still summarize the folders that exist
        log.warning("%s: cannot expand the sweep (%s); listing only the job folders", path, e)
        return None


def expand_sweep(params: dict[str, str], arguments: list[str]) -> list[list[str]]:
    """The override list of every job, in job-number order, as Hydra's basic sweeper builds it from
    ``hydra.sweeper.params`` and the command-line ``arguments``: the cartesian product of each key's
    values, keys in first-seen order, a later override of a key (the command line) replacing an earlier
    one (the experiment's ``params``).

    Raises:
        SummaryError: a sweep the basic sweeper does not expand either (e.g. an interval).
    """
    overrides = OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in params.items()), *arguments])
    try:
        (jobs,) = BasicSweeper.split_arguments(overrides, max_batch_size=None)  # one batch: every job
    except HydraException as e:
        raise SummaryError(f"{e}; only choice (a,b,c) and range sweeps expand") from e
    return jobs
