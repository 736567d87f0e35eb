"""Summarize a Hydra multirun (e.g. ``experiment=ablate_interp``) into a table and a chart.

A sweep folder holds ``multirun.yaml`` and one folder per job with ``.hydra/overrides.yaml``,
``config.yaml`` (the resolved run config) and, once the run finished, ``metrics.json``.
:func:`summarize` writes three files:

- ``results.csv``: one row per job: ``job``, ``status``, the setting (``model``, ``level``, ``mode``,
  ``align_corners``, ``antialias``), ``seed``, ``other`` (any other override that varies across the
  sweep), ``overrides``, ``dir`` and every metric of ``metrics.json``.
- ``results.md``: one row per setting: mean ± std over seeds of ``val/test`` ``acc`` (the final, fused
  prediction), ``acc_raw``, ``acc_zoom`` and ``acc_macro`` (per-class mean), in percent; the number of
  seeds; the rank by mean ``val/acc`` (the best setting is marked; the test split never selects).
  Jobs that failed, are unfinished or never started are listed under "Failed or unfinished runs";
  config keys that differ between jobs without being swept (a config file edited while the sweep ran)
  are flagged under "Config differences".
- ``results.png``: mean ``test/acc`` ± std per setting, bars grouped by zoom level, the plain model as
  a reference line.

Status of a job: ``ok`` (``metrics.json`` present), ``no metrics.json`` (the folder exists: the run
failed or is still running) or ``not started`` (the sweep in ``multirun.yaml`` lists it, no folder has
its overrides). Only the standard library, OmegaConf/Hydra (to read the sweep) and matplotlib are used.

An Optuna study (``hparams_search=optuna``) has the same layout, one folder per trial, and is read the
same way; its trials are not known in advance, so none is ``not started``. ``results.md`` then opens
with an "Optuna study" section: the objective (``optimized_metric`` and the sweeper's direction), the
best trial that the sweeper wrote to ``optimization_results.yaml``, and every trial ranked by the
objective with its searched values.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from fgzoom.errors import FGZoomError
from fgzoom.eval.paired import PairedComparison, paired_compare
from fgzoom.ops.interpolation import MODES
from fgzoom.sweeps.config_tree import flatten_config

log = logging.getLogger("fgzoom.summarize")

SETTING_KEYS = ("model", "level", "mode", "align_corners", "antialias", "sampler", "box", "num_regions")
TABLE_METRICS = ("acc", "acc_raw", "acc_zoom", "acc_macro")  # shown as val/<m> and test/<m>
SPLITS = ("val", "test")
MODE_ORDER = MODES  # table order: the interpolation modes as fgzoom.ops lists them
LEVEL_ORDER = ("feature", "image")
# overrides that are part of the setting or the seed, not "other"
_SETTING_OVERRIDES = {"model", "seed", *(f"model.zoom.{k}" for k in SETTING_KEYS[1:])}

OK, NO_METRICS, NOT_STARTED = "ok", "no metrics.json", "not started"
OPTUNA_RESULTS = "optimization_results.yaml"  # the Optuna sweeper's best trial, in the sweep folder


class SummaryError(FGZoomError):
    """The sweep folder cannot be summarized (missing, or no job in it)."""


@dataclass
class Run:
    """One job of the sweep."""

    job: str  # the job folder relative to the sweep folder, or "#<index>" when it was never started
    status: str  # OK | NO_METRICS | NOT_STARTED
    overrides: list[str] = field(default_factory=list)
    setting: dict[str, object] = field(default_factory=dict)
    seed: int | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    path: Path | None = None
    other: str = ""  # the overrides that vary across the sweep beyond the setting and the seed
    config: dict[str, object] = field(default_factory=dict)  # the run config, flattened to dotted keys


@dataclass
class SettingSummary:
    """All runs of one setting (every seed)."""

    setting: dict[str, object]
    other: str
    runs: list[Run]

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.status == OK]

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.finished if r.metrics.get(metric) is not None]

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.stdev(values) if len(values) >= 2 else None

    def by_seed(self, metric: str) -> dict[int, float]:
        """``{seed: value}`` of the finished runs that have a seed and the metric."""
        return {r.seed: r.metrics[metric] for r in self.finished if r.seed is not None and r.metrics.get(metric) is not None}

    @property
    def label(self) -> str:
        return setting_label(self.setting, self.other)


def setting_of(config: dict) -> dict[str, object]:
    """The setting columns of a resolved run config: ``model`` is ``plain`` when ``model.zoom`` is null."""
    model = config.get("model") or {}
    zoom = model.get("zoom")
    if zoom is None:
        return {"model": "plain", **dict.fromkeys(SETTING_KEYS[1:])}
    return {
        "model": "zoom",
        "level": zoom.get("level"),
        "mode": zoom.get("mode"),
        "align_corners": zoom.get("align_corners"),
        "antialias": bool(zoom.get("antialias", False)),
        "sampler": zoom.get("sampler", "slice"),
        "box": zoom.get("box", "threshold"),
        "num_regions": int(zoom.get("num_regions", 1)),
    }


def setting_label(setting: dict[str, object], other: str = "") -> str:
    """``plain`` or ``<level> / <mode>[ ac=<align_corners>][ aa][ / <box> <sampler>][ k=<n>]`` (+ ``[<other>]``)."""
    if setting.get("model") is None:
        label = "?"
    elif setting["model"] == "plain":
        label = "plain"
    else:
        label = f"{setting['level']} / {interp_label(setting)}"
        box, sampler = setting.get("box") or "threshold", setting.get("sampler") or "slice"
        if (box, sampler) != ("threshold", "slice"):  # the label of the original crop stays as it was
            label += f" / {box} {sampler}"
        if (setting.get("num_regions") or 1) > 1:
            label += f" k={setting['num_regions']}"
    return f"{label} [{other}]" if other else label


def interp_label(setting: dict[str, object], long: bool = False) -> str:
    """The interpolation part of a zoom setting: ``<mode>[ ac=<v>][ aa]`` (plot labels) or, ``long``,
    ``<mode>[, align_corners=<v>][, antialias]`` (table cells)."""
    sep, align, antialias = (", ", "align_corners=", "antialias") if long else (" ", "ac=", "aa")
    label = str(setting.get("mode"))
    if setting.get("align_corners") is not None:
        label += f"{sep}{align}{str(setting['align_corners']).lower()}"
    if setting.get("antialias"):
        label += f"{sep}{antialias}"
    return label


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
    if _is_optuna(sweeper):
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
        SummaryError: a range or interval sweep, which the basic sweeper does not expand either.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(
        [*(f"{k}={v}" for k, v in params.items()), *arguments]
    )
    values: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            raise SummaryError(f"{key}: a {override.value_type.name} sweep; only choice sweeps (a,b,c) expand")
    return [list(job) for job in itertools.product(*values.values())]


def _load_yaml(path: Path) -> object | None:
    if not path.is_file():
        return None
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # e.g. a file a running job is still writing
        log.warning("%s: unreadable (%s); ignored", path, e)
        return None


def load_run(job_dir: Path, sweep_dir: Path) -> Run:
    """Read one job folder: its overrides, setting and seed (``config.yaml``, else ``.hydra/config.yaml``)
    and ``metrics.json``."""
    overrides = [str(o) for o in (_load_yaml(job_dir / ".hydra" / "overrides.yaml") or [])]
    config = _load_yaml(job_dir / "config.yaml") or _load_yaml(job_dir / ".hydra" / "config.yaml") or {}
    metrics_path = job_dir / "metrics.json"
    metrics: dict[str, float | None] = {}
    status = NO_METRICS
    if metrics_path.is_file():
        try:
            raw = json.loads(metrics_path.read_text())
            metrics = {str(k): _finite(v) for k, v in raw.items()}
            status = OK
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
            log.warning("%s: unreadable (%s); counted as failed", metrics_path, e)
    setting = setting_of(config) if config else dict.fromkeys(SETTING_KEYS)
    seed = config.get("seed") if isinstance(config, dict) else None
    return Run(
        job=job_dir.relative_to(sweep_dir).as_posix(),
        status=status,
        overrides=overrides,
        setting=setting,
        seed=seed,
        metrics=metrics,
        path=job_dir,
        config=_flatten(config, str(job_dir)) if isinstance(config, dict) else {},
    )


def _flatten(config: dict, job_dir: str) -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists as JSON text; the job folder in a path as ``<job>``."""
    def cell(value: object) -> object:
        if isinstance(value, (list, dict)):
            return json.dumps(value)
        return value.replace(job_dir, "<job>") if isinstance(value, str) else value

    return {key: cell(value) for key, value in flatten_config(config).items()}


def _finite(value: object) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _is_job_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("metrics.json", "config.yaml", ".hydra/overrides.yaml"))


def collect_runs(sweep_dir: Path) -> list[Run]:
    """Every job of the sweep: the job folders found under ``sweep_dir`` and, when ``multirun.yaml``
    lists jobs without a folder, those as ``not started``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise SummaryError(
            f"{sweep_dir}: sweep folder not found; pass the folder a multirun wrote "
            "(logs/<task_name>/multiruns/<timestamp>)"
        )
    candidates = {p.parent for p in sweep_dir.rglob("metrics.json")}
    candidates |= {p.parent for p in sweep_dir.rglob("config.yaml") if p.parent.name != ".hydra"}
    candidates |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    job_dirs = sorted((d for d in candidates if d != sweep_dir and _is_job_dir(d)), key=_job_sort_key)
    runs = [load_run(d, sweep_dir) for d in job_dirs]

    expected = expected_jobs(sweep_dir)
    if expected is not None:
        seen = {job_key(r.overrides) for r in runs if r.overrides}
        for index, overrides in enumerate(expected):
            if job_key(overrides) not in seen:
                runs.append(
                    Run(
                        job=f"#{index}",
                        status=NOT_STARTED,
                        overrides=overrides,
                        setting=dict.fromkeys(SETTING_KEYS),
                        seed=_seed_from(overrides),
                    )
                )
    if not runs:
        raise SummaryError(
            f"{sweep_dir}: no job folders (with metrics.json, config.yaml or "
            ".hydra/overrides.yaml) and no multirun.yaml; is this a sweep folder?"
        )
    _mark_other_overrides(runs)
    return runs


def job_key(overrides: list[str]) -> tuple[str, ...]:
    """What identifies a job across sweep folders and csv files: its overrides, in any order."""
    return tuple(sorted(overrides))


def _job_sort_key(path: Path) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def _seed_from(overrides: list[str]) -> int | None:
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "seed" and value.lstrip("-").isdigit():
            return int(value)
    return None


def _mark_other_overrides(runs: list[Run]) -> None:
    """Fill ``Run.other`` with the overrides that differ between jobs and are not the setting or seed,
    so that, e.g., a sweep over ``model.zoom.stage`` too does not average different stages together."""
    split = [dict(o.partition("=")[::2] for o in r.overrides) for r in runs if r.overrides]
    keys = {k for s in split for k in s if k.lstrip("+~") not in _SETTING_OVERRIDES}
    varying = sorted(k for k in keys if len({s.get(k) for s in split}) > 1)
    for run in runs:
        values = dict(o.partition("=")[::2] for o in run.overrides)
        run.other = " ".join(f"{k}={values[k]}" for k in varying if k in values)


def config_differences(runs: list[Run]) -> dict[str, dict[str, list[str]]]:
    """Config keys whose value differs between jobs although the sweep does not explain it (e.g. a
    config file edited while the sweep ran): ``{key: {value: [jobs]}}``.

    A difference is explained when the key lies under an override's key (``model.zoom.stage=...``, or
    a group such as ``model=...``) or under ``seed``/``model.zoom``, and runs with the same overrides
    apart from the seed agree on it.
    """
    explained = {k.lstrip("+~") for r in runs for k in (o.partition("=")[0] for o in r.overrides)}
    explained |= {"seed", "model.zoom"}
    with_config = [r for r in runs if r.config]

    def same_job_but_seed(run: Run) -> tuple:
        rest = sorted(o for o in run.overrides if o.partition("=")[0].lstrip("+~") != "seed")
        return (*rest, *(str(run.setting.get(k)) for k in SETTING_KEYS), run.other)

    differences: dict[str, dict[str, list[str]]] = {}
    for key in sorted({k for r in with_config for k in r.config}):
        if key == "seed" or key.startswith("seed."):
            continue
        values: dict[str, list[str]] = {}
        per_group: dict[tuple, set[str]] = {}
        for run in with_config:
            value = _cell(run.config.get(key, "<missing>"))
            values.setdefault(value, []).append(run.job)
            per_group.setdefault(same_job_but_seed(run), set()).add(value)
        if len(values) < 2:
            continue
        is_swept = any(key == e or key.startswith(f"{e}.") for e in explained)
        if not is_swept or any(len(v) > 1 for v in per_group.values()):
            differences[key] = values
    return differences


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
        return _percent(value, None) if self.metric.rpartition("/")[2].startswith("acc") else _number(value)

    def value(self, run: Run) -> float | None:
        return run.metrics.get(self.metric) if run.status == OK else None

    def ranked(self, runs: list[Run]) -> list[Run]:
        """``runs`` best first by the objective; runs without a value last, in job order."""
        scored = [r for r in runs if self.value(r) is not None]
        scored.sort(key=lambda r: self.value(r), reverse=self.direction == "maximize")
        return scored + [r for r in runs if self.value(r) is None]


def _is_optuna(sweeper: object) -> bool:
    return isinstance(sweeper, dict) and str(sweeper.get("_target_", "")).endswith("OptunaSweeper")


def read_study(sweep_dir: Path, runs: list[Run]) -> OptunaStudy | None:
    """The Optuna study of the sweep in ``sweep_dir`` (``optimization_results.yaml``, else a job's
    ``.hydra/hydra.yaml`` naming the Optuna sweeper); None for any other sweep."""
    results = _load_yaml(sweep_dir / OPTUNA_RESULTS)
    sweeper: dict = {}
    for run in runs:
        hydra_cfg = _load_yaml(run.path / ".hydra" / "hydra.yaml") if run.path else None
        if isinstance(hydra_cfg, dict) and isinstance(hydra_cfg.get("hydra"), dict):
            sweeper = hydra_cfg["hydra"].get("sweeper") or {}
            break
    if not isinstance(results, dict) and not _is_optuna(sweeper):
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
        best_value=_finite(results.get("best_value")),
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


def group_by_setting(runs: list[Run]) -> list[SettingSummary]:
    """The runs that have a setting, grouped over seeds, in table order: plain, then by level and mode."""
    groups: dict[tuple, SettingSummary] = {}
    for run in runs:
        if run.setting.get("model") is None:
            continue  # no config: a job that never started or died before writing one
        key = (*(run.setting.get(k) for k in SETTING_KEYS), run.other)
        groups.setdefault(key, SettingSummary(setting=dict(run.setting), other=run.other, runs=[]))
        groups[key].runs.append(run)
    return sorted(groups.values(), key=_setting_sort_key)


def _setting_sort_key(summary: SettingSummary) -> tuple:
    s = summary.setting
    order = {None: 0, True: 1, False: 2}

    def index(value, options):
        return options.index(value) if value in options else len(options)

    return (
        s["model"] != "plain",
        index(s["level"], LEVEL_ORDER),
        index(s["mode"], MODE_ORDER),
        str(s["mode"]),
        order.get(s["align_corners"], 3),
        bool(s["antialias"]),
        str(s.get("box")),
        str(s.get("sampler")),
        s.get("num_regions") or 1,
        summary.other,
    )


def best_setting(summaries: list[SettingSummary], metric: str = "val/acc") -> SettingSummary | None:
    """The setting with the highest mean ``metric`` (the first of equals); None if no run finished."""
    scored = [s for s in summaries if s.mean(metric) is not None]
    return max(scored, key=lambda s: s.mean(metric)) if scored else None


def write_csv(runs: list[Run], path: Path) -> None:
    metric_keys = sorted({k for r in runs for k in r.metrics})
    columns = ["job", "status", *SETTING_KEYS, "seed", "other", "overrides", "dir", *metric_keys]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for run in runs:
            row = {
                "job": run.job,
                "status": run.status,
                "seed": run.seed,
                "other": run.other,
                "overrides": " ".join(run.overrides),
                "dir": _relative(run.path) if run.path else "",
            }
            row.update({k: _csv_value(run.setting.get(k)) for k in SETTING_KEYS})
            row.update({k: _csv_value(run.metrics.get(k)) for k in metric_keys})
            writer.writerow(row)


def _relative(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it (a csv kept under docs/ names no
    machine's folders), else as it is."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _from_csv(key: str, text: str) -> object:
    """A setting or seed cell of ``results.csv`` back to its value (inverse of ``_csv_value``)."""
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    if key in ("seed", "num_regions") and text.lstrip("-").isdigit():
        return int(text)
    return text


def read_csv(path: Path) -> list[Run]:
    """The runs of a ``results.csv`` this module wrote (e.g. one committed under ``docs/``), so its tables
    and plot can be drawn again without the sweep folder."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "status" not in rows[0]:
        raise SummaryError(f"{path}: not a results.csv written by scripts/summarize.py (no rows or no status column)")
    fixed = {"job", "status", *SETTING_KEYS, "seed", "other", "overrides", "dir"}
    return [
        Run(
            job=row["job"],
            status=row["status"],
            overrides=row["overrides"].split(),
            setting={k: _from_csv(k, row[k]) for k in SETTING_KEYS},
            seed=_from_csv("seed", row["seed"]),
            metrics={k: _finite(v) if v != "" else None for k, v in row.items() if k not in fixed},
            other=row["other"],
        )
        for row in rows
    ]


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else value


def _percent(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if std is not None else f"{100 * mean:.1f}"


def _cell(value: object) -> str:
    if value is None:
        return "–"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return _cell(value)


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
        params = ", ".join(f"`{k}={_number(v)}`" for k, v in study.best_params.items())
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
        cells = [rank, run.job, run.status, *(_number(_float_or_str(values.get(k))) for k in study.params)]
        cells += [study.format(study.value(run)), *(_percent(run.metrics.get(m), None) for m in accuracies)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _float_or_str(value: str | None) -> object:
    try:
        return float(value) if value is not None and not value.isdigit() else value
    except ValueError:
        return value


def reference_settings(summaries: list[SettingSummary]) -> list[tuple[str, SettingSummary]]:
    """What each setting is compared with: the best setting by mean val/acc and the plain model (if run)."""
    refs = []
    best = best_setting(summaries)
    if best is not None:
        refs.append(("best", best))
    plain = next((s for s in summaries if s.setting.get("model") == "plain" and s.finished), None)
    if plain is not None:
        refs.append(("plain", plain))
    return refs


def _paired_cell(c: PairedComparison | None, seeds: int | None = None) -> str:
    """``+1.2 [-0.3, +2.7], 2/1, noise``: mean difference in points, 95% interval, seeds better/worse and the
    verdict; ``n=<k>`` is added when the shared seeds are fewer than the row's own ``seeds``."""
    if c is None:
        return "–"
    interval = "" if c.ci_low is None else f" [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]"
    verdict = "noise" if c.within_noise else ("**better**" if c.mean_diff > 0 else "**worse**")
    shared = "" if c.seeds == seeds else f", n={c.seeds}"
    return f"{100 * c.mean_diff:+.1f}{interval}, {c.wins}/{c.losses}{shared}, {verdict}"


@dataclass(frozen=True)
class StepCost:
    """Train-step time per setting over the plain model's, from a ``scripts/bench.py step --interp`` JSON."""

    source: str  # the JSON's path as given
    ratios: dict[str, float]  # bench row name -> step time / plain step time
    measured_on: str  # backbone, sizes, batch and machine, for the table's caption


def read_step_cost(path: Path | str) -> StepCost:
    """The ``step`` rows of a bench JSON (``python scripts/bench.py step --interp ... --out <path>``)."""
    try:
        report = json.loads(Path(path).read_text())
        rows, args = report["step"], report.get("args", {})
        ratios = {row["name"]: float(row["ratio"]) for row in rows}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SummaryError(f"{path}: not a step bench JSON of scripts/bench.py step --out ({e})") from e
    size = f"{args.get('image_size')} px"
    if args.get("input_size"):
        size += f" (backbone view {args['input_size']} px)"
    measured_on = f"{args.get('backbone')}, {size}, batch {args.get('batch_size')}, {report.get('machine')}"
    return StepCost(source=str(path), ratios=ratios, measured_on=measured_on)


def bench_name(model_choice: str) -> str:
    """The step bench's row name of a ``model=`` option: ``plain``, or ``zoom <level> <setting>`` for
    ``interp/<level>/<setting>`` (``scripts/bench.py step --interp`` names its rows so)."""
    return model_choice if model_choice == "plain" else "zoom " + model_choice.removeprefix("interp/").replace("/", " ")


def _model_choice(summary: SettingSummary) -> str | None:
    return next((o.split("=", 1)[1] for r in summary.runs for o in r.overrides if o.startswith("model=")), None)


def comparison_lines(
    summaries: list[SettingSummary], metric: str = "test/acc", step: StepCost | None = None
) -> list[str]:
    """The markdown section that answers the sweep: per setting its seeds, ``metric`` per seed and mean ±
    std, mean val/acc, the seed-paired differences against the plain model and the best setting, and (with
    ``step``) the train step's cost against the plain model's."""
    refs = dict(reference_settings(summaries))
    if not refs:
        return []
    zoom = [s for s in summaries if s.setting.get("model") == "zoom"]
    extra = [k for k in ("box", "num_regions") if len({s.setting.get(k) for s in zoom}) > 1]
    has_other = any(s.other for s in summaries)
    lines = ["## Paired comparisons", "",
             f"{metric} in %: per seed, then mean ± std over seeds; val/acc in % (mean ± std). \"vs plain\" and "
             f"\"vs best\": the setting's {metric} minus the reference's, paired by seed, in points: mean [95% t "
             "interval], seeds better/worse (and `n=` seeds compared where fewer than the row's), *noise* when "
             "the interval contains 0, else **better**/**worse**. The best setting is the one with the highest "
             f"mean val/acc; the comparison is on {metric}."]
    if step is not None:
        lines[-1] += (f" \"step x plain\": the train step's time over the plain model's, from `{step.source}` "
                      f"({step.measured_on}).")
    header = ["level", "sampler", "mode", *(["box"] if "box" in extra else []),
              *(["regions"] if "num_regions" in extra else []), *(["other"] if has_other else []),
              "seeds", f"{metric} % per seed", f"{metric} %", "val/acc %", "vs plain (points, 95% CI)",
              "vs best (points, 95% CI)", *(["step x plain"] if step is not None else [])]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best, plain = refs.get("best"), refs.get("plain")
    for s in summaries:
        seeds = len(s.finished)
        if s.setting.get("model") == "plain":
            cells = ["plain (no zoom)", "–", "–", *["–"] * len(extra)]
        else:
            cells = [str(s.setting.get("level")), str(s.setting.get("sampler")), interp_label(s.setting, long=True),
                     *(_cell(s.setting.get(k)) for k in extra)]
        cells += [s.other or "–"] if has_other else []
        per_seed = s.by_seed(metric)
        cells += [str(seeds), " / ".join(f"{100 * per_seed[k]:.1f}" for k in sorted(per_seed)) or "–",
                  _percent(s.mean(metric), s.std(metric)), _percent(s.mean("val/acc"), s.std("val/acc"))]
        cells.append("–" if plain is None or s is plain
                     else _paired_cell(paired_compare(s.by_seed(metric), plain.by_seed(metric)), seeds))
        cells.append("**best by val/acc**" if s is best
                     else _paired_cell(paired_compare(s.by_seed(metric), best.by_seed(metric)), seeds))
        if step is not None:
            choice = _model_choice(s)
            ratio = step.ratios.get(bench_name(choice)) if choice else None
            cells.append("–" if ratio is None else f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_markdown(
    runs: list[Run], summaries: list[SettingSummary], path: Path, title: str, study: OptunaStudy | None = None,
    step: StepCost | None = None,
) -> None:
    metric_keys = [f"{split}/{m}" for m in TABLE_METRICS for split in SPLITS]
    best = best_setting(summaries)
    ranked = sorted((s for s in summaries if s.mean("val/acc") is not None), key=lambda s: -s.mean("val/acc"))
    rank = {id(s): i + 1 for i, s in enumerate(ranked)}
    finished = sum(r.status == OK for r in runs)
    has_other = any(s.other for s in summaries)
    differences = config_differences(runs)

    lines = [f"# {title}", ""]
    lines.append(
        f"{finished} of {len(runs)} runs finished. Mean ± std over seeds, accuracy in %; "
        "`acc` is the final (fused) prediction, `acc_raw`/`acc_zoom` the branches, `acc_macro` "
        "the per-class mean. Rank by mean val/acc (the test split never selects)."
    )
    lines.append("")
    if differences:
        lines.append(
            f"**Warning:** the run configs differ in {len(differences)} key(s) that the sweep does not "
            'vary (see "Config differences" below); the rows may average different setups.'
        )
        lines.append("")
    if best is not None and study is None:  # a study names its best trial in its own section
        lines.append(
            f"Best setting by mean val/acc: **{best.label}** "
            f"(val/acc {_percent(best.mean('val/acc'), best.std('val/acc'))}, "
            f"test/acc {_percent(best.mean('test/acc'), best.std('test/acc'))}, "
            f"{len(best.values('val/acc'))} seeds)."
        )
        lines.append("")
    if study is not None:
        lines += study_lines(study, runs)
        lines += ["## Settings", ""]
    header = ["rank", *SETTING_KEYS, *(["other"] if has_other else []), "seeds", *metric_keys]
    lines.append("| " + " | ".join(header) + " |")
    text_columns = len(SETTING_KEYS) + has_other
    lines.append("|" + "|".join(["---:", *["---"] * text_columns, *["---:"] * (1 + len(metric_keys))]) + "|")
    for s in summaries:
        r = rank.get(id(s))
        rank_cell = "–" if r is None else (f"**{r} (best)**" if s is best else str(r))
        cells = [rank_cell, *(_cell(s.setting.get(k)) for k in SETTING_KEYS)]
        cells += [s.other] if has_other else []
        cells.append(str(len(s.finished)))
        cells += [_percent(s.mean(k), s.std(k)) for k in metric_keys]
        lines.append("| " + " | ".join(cells) + " |")
    if not summaries:
        lines.append("| " + " | ".join(["–"] * len(header)) + " |")

    lines += ["", *comparison_lines(summaries, step=step)]
    failed = [r for r in runs if r.status != OK]
    lines += ["## Failed or unfinished runs", ""]
    if failed:
        lines.append("| job | status | setting | seed | overrides |")
        lines.append("|---|---|---|---:|---|")
        for run in failed:
            label = setting_label(run.setting, run.other) if run.setting.get("model") else "?"
            lines.append(
                f"| {run.job} | {run.status} | {label} | {_cell(run.seed)} | "
                f"{' '.join(run.overrides) or '–'} |"
            )
    else:
        lines.append("None: every run wrote metrics.json.")
    if differences:
        lines += ["", "## Config differences", "", "Keys that differ between jobs but are not swept:", ""]
        for key, values in differences.items():
            where = "; ".join(f"`{value}` in job(s) {', '.join(jobs)}" for value, jobs in values.items())
            lines.append(f"- `{key}`: {where}")
    path.write_text("\n".join(lines) + "\n")


def plot_labels(zoom: list[SettingSummary]) -> list[str]:
    """The x label of each zoom setting in the plot (its level is the bar's colour): the interpolation, led
    by the box rule and sampler and followed by the region count where these vary across the sweep (so
    ``slice bilinear`` and ``affine bilinear`` get bars of their own), then any other override."""
    varying = [k for k in ("box", "sampler", "num_regions") if len({s.setting.get(k) for s in zoom}) > 1]
    labels = []
    for s in zoom:
        prefix = "".join(f"{s.setting.get(k)} " for k in ("box", "sampler") if k in varying)
        regions = f" k={s.setting.get('num_regions')}" if "num_regions" in varying else ""
        labels.append(prefix + interp_label(s.setting) + regions + (f"\n{s.other}" if s.other else ""))
    return labels


def plot(summaries: list[SettingSummary], path: Path, metric: str = "test/acc") -> None:
    """Bar chart of mean ``metric`` ± std per setting, grouped by level; plain as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoom = [s for s in summaries if s.setting["model"] != "plain" and s.mean(metric) is not None]
    levels = [
        lv
        for lv in (*LEVEL_ORDER, *sorted({str(s.setting["level"]) for s in zoom}))
        if any(str(s.setting["level"]) == lv for s in zoom)
    ]
    levels = list(dict.fromkeys(levels))

    labels = dict(zip(map(id, zoom), plot_labels(zoom), strict=True))

    def x_label(s: SettingSummary) -> str:
        return labels[id(s)]

    categories = list(dict.fromkeys(x_label(s) for s in zoom))
    refs = dict(reference_settings(summaries))
    reference = refs.get("plain") or refs.get("best")
    paired = {id(s): paired_compare(s.by_seed(metric), reference.by_seed(metric))
              for s in zoom if reference is not None and s is not reference}
    show_paired = any(c is not None for c in paired.values())
    fig, axes = plt.subplots(2 if show_paired else 1, 1, squeeze=False, sharex=True, layout="constrained",
                             figsize=(max(6.0, 0.9 * len(categories) + 2), 7.5 if show_paired else 4.5))
    ax = axes[0][0]
    width = 0.8 / max(1, len(levels))
    for i, level in enumerate(levels):
        by_label = {x_label(s): s for s in zoom if str(s.setting["level"]) == level}
        xs = [j + (i - (len(levels) - 1) / 2) * width for j, c in enumerate(categories) if c in by_label]
        picked = [by_label[c] for c in categories if c in by_label]
        ax.bar(
            xs,
            [100 * s.mean(metric) for s in picked],
            width,
            yerr=[100 * (s.std(metric) or 0.0) for s in picked],
            capsize=3,
            label=f"level={level}",
        )
    for s in summaries:
        if s.setting["model"] == "plain" and s.mean(metric) is not None:
            mean, std = 100 * s.mean(metric), 100 * (s.std(metric) or 0.0)
            ax.axhline(
                mean,
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"plain{f' [{s.other}]' if s.other else ''} (no zoom)",
            )
            if std:
                ax.axhspan(mean - std, mean + std, color="black", alpha=0.08)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{metric}: mean ± std over seeds per interpolation setting")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    if show_paired:  # seed-paired difference to the reference with its 95% interval
        name = "plain" if reference is refs.get("plain") else f"best ({reference.label})"
        bottom = axes[1][0]
        for i, level in enumerate(levels):
            picked = [(j, paired[id(s)]) for j, c in enumerate(categories) for s in zoom
                      if x_label(s) == c and str(s.setting["level"]) == level and paired.get(id(s)) is not None]
            xs = [j + (i - (len(levels) - 1) / 2) * width for j, _ in picked]
            means = [100 * c.mean_diff for _, c in picked]
            errors = [[100 * (c.mean_diff - c.ci_low) if c.ci_low is not None else 0.0 for _, c in picked],
                      [100 * (c.ci_high - c.mean_diff) if c.ci_high is not None else 0.0 for _, c in picked]]
            bottom.errorbar(xs, means, yerr=errors, fmt="o", capsize=4, label=f"level={level}")
        bottom.axhline(0.0, color="black", linewidth=1)
        bottom.set_ylabel(f"{metric} difference (points)")
        bottom.set_title(f"minus {name}, paired by seed: mean, 95% t interval (crossing 0 = noise)", fontsize="medium")
        ax = bottom
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _load_source(source: Path) -> list[Run]:
    if source.suffix == ".csv":
        if not source.is_file():
            raise SummaryError(f"{source}: file not found; pass a results.csv or a sweep folder")
        return read_csv(source)
    return collect_runs(source)


_STATUS_RANK = {OK: 0, NO_METRICS: 1, NOT_STARTED: 2}


def merge_runs(sources: list[list[Run]]) -> list[Run]:
    """The runs of several sweeps of one experiment as one sweep (e.g. a sweep run in parts, on several
    machines or sessions, each part's ``results.csv`` kept under ``docs/``). A job is identified by its
    overrides; where several sources hold it, a finished run beats a failed one, which beats one never
    started; of two finished runs the first source's is kept (a warning names the job when their
    ``test/acc`` differ). ``other`` is worked out again over the merged runs."""
    merged: dict[tuple, Run] = {}
    unkeyed: list[Run] = []
    for runs in sources:
        for run in runs:
            if not run.overrides:
                unkeyed.append(run)
                continue
            key = job_key(run.overrides)
            kept = merged.get(key)
            if kept is None or _STATUS_RANK[run.status] < _STATUS_RANK[kept.status]:
                merged[key] = run
            elif run.status == kept.status == OK and run.metrics.get("test/acc") != kept.metrics.get("test/acc"):
                log.warning(
                    "%s: finished in two sources with test/acc %s and %s; keeping the first",
                    " ".join(run.overrides), kept.metrics.get("test/acc"), run.metrics.get("test/acc"),
                )
    runs = [*merged.values(), *unkeyed]
    _mark_other_overrides(runs)
    return runs


def summarize(
    sweep_dir: Path | str | list[Path | str], out_dir: Path | str | None = None, name: str | None = None,
    step_bench: Path | str | None = None,
) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and ``results.png`` for the sweep in ``sweep_dir`` (into
    ``out_dir``, default the sweep folder); returns their paths. ``sweep_dir`` may also be a ``.csv`` this
    function wrote: then ``<name>.md`` and ``<name>.png`` are drawn from it, beside it (or in ``out_dir``).
    A list of sweep folders and/or csv files is merged into one sweep (:func:`merge_runs`) and written as
    ``<name>.csv/.md/.png`` (``name`` default: the first csv's stem, else ``results``) into ``out_dir``
    (default: beside the first csv, else the first folder). ``step_bench``: a ``scripts/bench.py step
    --interp`` JSON whose ratios fill a "step x plain" column of the paired comparisons."""
    sources = [Path(s) for s in (sweep_dir if isinstance(sweep_dir, (list, tuple)) else [sweep_dir])]
    step = read_step_cost(step_bench) if step_bench is not None else None
    if not sources:
        raise SummaryError("no sweep folder or results csv given")
    first = sources[0]
    merged = len(sources) > 1
    from_csv = not merged and first.suffix == ".csv"  # the input itself: drawn from, not rewritten
    csv_sources = [s for s in sources if s.suffix == ".csv"]
    runs = merge_runs([_load_source(s) for s in sources]) if merged else _load_source(first)
    out_dir = Path(out_dir) if out_dir is not None else (csv_sources[0].parent if csv_sources else first)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = name or (csv_sources[0].stem if csv_sources else "results")
    paths = {"md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    if not from_csv:
        paths = {"csv": out_dir / f"{stem}.csv", **paths}
        write_csv(runs, paths["csv"])
    study = None if merged or from_csv else read_study(first, runs)
    title = "Sweep " + " + ".join(str(s) for s in sources)
    summaries = group_by_setting(runs)
    write_markdown(runs, summaries, paths["md"], title=title, study=study, step=step)
    plot(summaries, paths["png"])
    return paths
