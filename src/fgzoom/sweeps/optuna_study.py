"""An Optuna study (``hparams_search=optuna``) read from its sweep folder, and its section of ``results.md``.

The study has the layout of a grid sweep, one folder per trial, and its runs are read the same way; its
trials are not known in advance, so none is ``not started``. What it adds: the objective
(``optimized_metric`` and the sweeper's direction) and the best trial that the sweeper wrote to
``optimization_results.yaml``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from fgzoom.sweeps.expand import OPTUNA_RESULTS, is_optuna
from fgzoom.sweeps.labels import number, percent
from fgzoom.sweeps.runs import OK, Run, finite, load_yaml


@dataclass
class OptunaStudy:
    """What an Optuna sweep adds to the job folders: the objective and the sweeper's best trial."""

    metric: str  # optimized_metric of the trials: a metrics.json key
    direction: str  # maximize | minimize (a list of them for a multi-objective study)
    params: list[str]  # the searched keys
    best_params: dict[str, object] | None = None  # optimization_results.yaml; None until the study ends
    best_value: float | None = None
    best_jobs: list[str] = field(default_factory=list)  # the job folder(s) of the best trial

    def format(self, value: float | None) -> str:
        """An accuracy in % as in the other tables (``75.0``), any other objective as is (``0.4213``)."""
        return percent(value, None) if self.metric.rpartition("/")[2].startswith("acc") else number(value)

    def value(self, run: Run) -> float | None:
        return run.metrics.get(self.metric) if run.status == OK else None

    def ranked(self, runs: list[Run]) -> list[Run]:
        """``runs`` best first by the objective; runs without a value last, in job order."""
        scored = [r for r in runs if self.value(r) is not None]
        scored.sort(key=lambda r: self.value(r), reverse=self.direction == "maximize")
        return scored + [r for r in runs if self.value(r) is None]


def read_study(sweep_dir: Path, runs: list[Run]) -> OptunaStudy | None:
    """The Optuna study of the sweep in ``sweep_dir`` (``optimization_results.yaml``, else a job's
    ``.hydra/hydra.yaml`` naming the Optuna sweeper); None for any other sweep."""
    results = load_yaml(sweep_dir / OPTUNA_RESULTS)
    sweeper: dict = {}
    for run in runs:
        hydra_cfg = load_yaml(run.path / ".hydra" / "hydra.yaml") if run.path else None
        if isinstance(hydra_cfg, dict) and isinstance(hydra_cfg.get("hydra"), dict):
            sweeper = hydra_cfg["hydra"].get("sweeper") or {}
            break
    if not isinstance(results, dict) and not is_optuna(sweeper):
        return None
    results = results if isinstance(results, dict) else {}
    direction = sweeper.get("direction", "minimize")  # the sweeper's default
    metric = next((str(r.config["optimized_metric"]) for r in runs if r.config.get("optimized_metric")), "val/acc")
    best_params = results.get("best_params")
    trials = [_override_values(r.overrides) for r in runs if r.overrides]
    varying = sorted(k for k in {k for t in trials for k in t} if len({t.get(k) for t in trials}) > 1)
    params = list(dict.fromkeys([*(best_params or {}), *(sweeper.get("params") or {}), *varying]))
    study = OptunaStudy(
        metric=metric,
        direction=str(direction).lower() if isinstance(direction, str) else str(direction),
        params=params,
        best_params=best_params,
        best_value=finite(results.get("best_value")),
    )
    if best_params:
        study.best_jobs = [r.job for r in runs if _matches(_override_values(r.overrides), best_params)]
    return study


def _override_values(overrides: list[str]) -> dict[str, str]:
    return {k.lstrip("+~"): v for k, _, v in (o.partition("=") for o in overrides)}


def _matches(values: dict[str, str], params: dict[str, object]) -> bool:
    """True when the overrides ``values`` set every key of ``params`` to its value (floats compared as numbers)."""
    for key, want in params.items():
        have = values.get(str(key))
        if have is None:
            return False
        try:
            if not math.isclose(float(have), float(want), rel_tol=1e-12):
                return False
        except (TypeError, ValueError):
            if have != str(want):
                return False
    return True


def study_lines(study: OptunaStudy, runs: list[Run]) -> list[str]:
    """The "Optuna study" section of ``results.md``: objective, best trial, every trial ranked."""
    finished = sum(study.value(r) is not None for r in runs)
    lines = [
        "## Optuna study",
        "",
        f"Objective: {study.direction} `{study.metric}` (optimized_metric); {len(runs)} trials, "
        f"{finished} with a value. Accuracy in %.",
        "",
    ]
    if study.best_params is not None:
        jobs = ", ".join(study.best_jobs) or "not found"
        params = ", ".join(f"`{k}={number(v)}`" for k, v in study.best_params.items())
        lines += [f"Best trial ({OPTUNA_RESULTS}): job **{jobs}**, {study.metric} = {study.format(study.best_value)}; "
                  f"{params}.", ""]
    else:
        lines += [f"No best trial in {OPTUNA_RESULTS} (the study has not finished, or has several "
                  "objectives): ranked by the objective below.", ""]
    accuracies = [m for m in ("val/acc", "test/acc") if m != study.metric]
    header = ["rank", "job", "status", *study.params, study.metric, *accuracies]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---:", "---", "---", *["---:"] * (len(header) - 3)]) + "|")
    for i, run in enumerate(study.ranked(runs)):
        values = _override_values(run.overrides)
        rank = "–" if study.value(run) is None else str(i + 1)
        if run.job in study.best_jobs:
            rank = f"**{rank} (best)**"
        cells = [rank, run.job, run.status, *(number(_float_or_str(values.get(k))) for k in study.params)]
        cells += [study.format(study.value(run)), *(percent(run.metrics.get(m), None) for m in accuracies)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _float_or_str(value: str | None) -> object:
    try:
        return float(value) if value is not None and not value.isdigit() else value
    except ValueError:
        return value
