"""The runs of a sweep: one :class:`Run` per job read from its folder, and the runs of one setting over
seeds as a :class:`SettingSummary`.

A sweep folder holds ``multirun.yaml`` and one folder per job with ``.hydra/overrides.yaml``, ``config.yaml``
(the resolved run config) and, once the run finished, ``metrics.json``. Status of a job: ``ok``
(``metrics.json`` present), ``no metrics.json`` (the folder exists: the run failed or is still running) or
``not started`` (the sweep in ``multirun.yaml`` lists it, no folder has its overrides).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from fgzoom.errors import SummaryError
from fgzoom.ops.interpolation import MODES
from fgzoom.sweeps.config_tree import flatten_config
from fgzoom.sweeps.expand import expected_jobs
from fgzoom.sweeps.labels import setting_label

log = logging.getLogger("fgzoom.summarize")

SETTING_KEYS = ("model", "level", "mode", "align_corners", "antialias", "sampler", "box", "num_regions")
# the components of experiment=ablate_components beyond the model: the fusion of the zoom's branches and the weight
# of the attention-drop loss; columns of their own only where a setting departs from VARIANT_DEFAULTS
VARIANT_KEYS = ("fusion", "drop")
VARIANT_DEFAULTS = {"fusion": "mean_prob", "drop": 0.0}  # the zoom model's (configs/model/zoom.yaml)
GROUP_KEYS = (*SETTING_KEYS, *VARIANT_KEYS)  # what one setting (one row over seeds) is
MODEL_ORDER = ("plain", "bap", "zoom")  # table order: the control without zoom, the head without the crop, the zoom
MODE_ORDER = MODES  # table order: the interpolation modes as fgzoom.ops lists them
LEVEL_ORDER = ("feature", "image")
# fgzoom.models.zoom_config.FUSIONS, written out: importing the model configs would load timm into summarize.py
FUSION_ORDER = ("mean_prob", "mean_logit", "raw", "zoom")
# overrides that are part of the setting or the seed, not "other"
_SETTING_OVERRIDES = {"model", "seed", "model.zoom.crop", "model.zoom.fusion", "model.loss.drop",
                      *(f"model.zoom.{k}" for k in SETTING_KEYS[1:])}

OK, NO_METRICS, NOT_STARTED, INVALID = "ok", "no metrics.json", "not started", "invalid setting"
INVALID_MARKER = "invalid.txt"  # written by a multirun job whose config was refused (the one error line)


@dataclass
class Run:
    """One job of the sweep."""

    job: str  # the job folder relative to the sweep folder, or "#<index>" when it was never started
    status: str  # OK | NO_METRICS | NOT_STARTED | INVALID
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
    """The setting (``GROUP_KEYS``) of a resolved run config. ``model`` is ``plain`` when ``model.zoom`` is null,
    ``bap`` when ``model.zoom.crop`` is false (no zoomed view: level, sampler and interpolation are None; the box
    rule is kept, it boxes for the localization metrics), else ``zoom``; ``fusion`` (zoom only) and ``drop``
    (``model.loss.drop``, as a float; bap and zoom) are the components ``experiment=ablate_components`` varies."""
    model = config.get("model") or {}
    zoom = model.get("zoom")
    if zoom is None:
        return {"model": "plain", **dict.fromkeys(GROUP_KEYS[1:])}
    drop = float((model.get("loss") or {}).get("drop", VARIANT_DEFAULTS["drop"]))
    if zoom.get("crop", True) is False:
        return {**dict.fromkeys(GROUP_KEYS), "model": "bap", "box": zoom.get("box", "threshold"),
                "num_regions": int(zoom.get("num_regions", 1)), "drop": drop}
    return {
        "model": "zoom",
        "level": zoom.get("level"),
        "mode": zoom.get("mode"),
        "align_corners": zoom.get("align_corners"),
        "antialias": bool(zoom.get("antialias", False)),
        "sampler": zoom.get("sampler", "slice"),
        "box": zoom.get("box", "threshold"),
        "num_regions": int(zoom.get("num_regions", 1)),
        "fusion": zoom.get("fusion", VARIANT_DEFAULTS["fusion"]),
        "drop": drop,
    }


def has_variant(setting: dict[str, object], key: str) -> bool:
    """Whether ``setting`` departs from the zoom model's default ``key`` (a ``VARIANT_KEYS`` entry); None is
    "does not apply" (plain, bap's fusion)."""
    value = setting.get(key)
    return value is not None and value != VARIANT_DEFAULTS[key]


def load_yaml(path: Path) -> object | None:
    """The YAML file at ``path`` as plain containers (interpolations left as written); None when it is
    missing or unreadable (e.g. a file a running job is still writing: a warning says so)."""
    if not path.is_file():
        return None
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # e.g. a file a running job is still writing
        log.warning("%s: unreadable (%s); ignored", path, e)
        return None


def finite(value: object) -> float | None:
    """``value`` as a float; None for None, NaN and infinities (a metric that has no value)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def load_run(job_dir: Path, sweep_dir: Path) -> Run:
    """Read one job folder: its overrides, setting and seed (``config.yaml``, else ``.hydra/config.yaml``)
    and ``metrics.json``."""
    overrides = [str(o) for o in (load_yaml(job_dir / ".hydra" / "overrides.yaml") or [])]
    config = load_yaml(job_dir / "config.yaml") or load_yaml(job_dir / ".hydra" / "config.yaml") or {}
    metrics_path = job_dir / "metrics.json"
    metrics: dict[str, float | None] = {}
    status = INVALID if (job_dir / INVALID_MARKER).is_file() else NO_METRICS
    if metrics_path.is_file():
        try:
            raw = json.loads(metrics_path.read_text())
            metrics = {str(k): finite(v) for k, v in raw.items()}
            status = OK
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
            log.warning("%s: unreadable (%s); counted as failed", metrics_path, e)
    setting = setting_of(config) if config else dict.fromkeys(GROUP_KEYS)
    seed = config.get("seed") if isinstance(config, dict) else None
    return Run(
        job=job_dir.relative_to(sweep_dir).as_posix(),
        status=status,
        overrides=overrides,
        setting=setting,
        seed=seed,
        metrics=metrics,
        path=job_dir,
        config=_flatten(config, str(job_dir.resolve())) if isinstance(config, dict) else {},
    )


def _flatten(config: dict, job_dir: str) -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists as JSON text; in a path the job folder as ``<job>`` and
    the checkout the job ran from (``paths.root_dir``) as ``<root>``, so two clones give the same config."""
    root = (config.get("paths") or {}).get("root_dir") if isinstance(config.get("paths"), dict) else None

    def cell(value: object) -> object:
        if isinstance(value, (list, dict)):
            return json.dumps(value)
        if not isinstance(value, str):
            return value
        value = value.replace(job_dir, "<job>")
        return value.replace(root, "<root>") if isinstance(root, str) and root else value

    return {key: cell(value) for key, value in flatten_config(config).items()}


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
                        setting=dict.fromkeys(GROUP_KEYS),
                        seed=_seed_from(overrides),
                    )
                )
    if not runs:
        raise SummaryError(
            f"{sweep_dir}: no job folders (with metrics.json, config.yaml or "
            ".hydra/overrides.yaml) and no multirun.yaml; is this a sweep folder?"
        )
    mark_other_overrides(runs)
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


def mark_other_overrides(runs: list[Run]) -> None:
    """Fill ``Run.other`` with the overrides that differ between jobs and are not the setting or seed,
    so that, e.g., a sweep over ``model.zoom.stage`` too does not average different stages together."""
    split = [dict(o.partition("=")[::2] for o in r.overrides) for r in runs if r.overrides]
    keys = {k for s in split for k in s if k.lstrip("+~") not in _SETTING_OVERRIDES}
    varying = sorted(k for k in keys if len({s.get(k) for s in split}) > 1)
    for run in runs:
        values = dict(o.partition("=")[::2] for o in run.overrides)
        run.other = " ".join(f"{k}={values[k]}" for k in varying if k in values)


def group_by_setting(runs: list[Run]) -> list[SettingSummary]:
    """The runs that have a setting, grouped over seeds, in table order: plain, bap, then zoom by level and mode;
    within one zoom, by fusion (mean_prob, the default, first), then without attention drop before with it."""
    groups: dict[tuple, SettingSummary] = {}
    for run in runs:
        if run.setting.get("model") is None:
            continue  # no config: a job that never started or died before writing one
        key = (*(run.setting.get(k) for k in GROUP_KEYS), run.other)
        groups.setdefault(key, SettingSummary(setting=dict(run.setting), other=run.other, runs=[]))
        groups[key].runs.append(run)
    return sorted(groups.values(), key=_setting_sort_key)


def _setting_sort_key(summary: SettingSummary) -> tuple:
    s = summary.setting
    order = {None: 0, True: 1, False: 2}

    def index(value, options):
        return options.index(value) if value in options else len(options)

    return (
        index(s["model"], MODEL_ORDER),
        index(s["level"], LEVEL_ORDER),
        index(s["mode"], MODE_ORDER),
        str(s["mode"]),
        order.get(s["align_corners"], 3),
        bool(s["antialias"]),
        str(s.get("box")),
        str(s.get("sampler")),
        s.get("num_regions") or 1,
        index(s.get("fusion") or VARIANT_DEFAULTS["fusion"], FUSION_ORDER),
        s.get("drop") or 0.0,
        summary.other,
    )


def best_setting(summaries: list[SettingSummary], metric: str = "val/acc") -> SettingSummary | None:
    """The setting with the highest mean ``metric`` (the first of equals); None if no run finished."""
    scored = [s for s in summaries if s.mean(metric) is not None]
    return max(scored, key=lambda s: s.mean(metric)) if scored else None


def reference_settings(summaries: list[SettingSummary]) -> list[tuple[str, SettingSummary]]:
    """What each setting is compared with: the best setting by mean val/acc, the plain model and the bap control
    (the zoom model without the crop; the first bap setting in table order, i.e. without attention drop where
    that ran), each where it ran."""
    refs = []
    best = best_setting(summaries)
    if best is not None:
        refs.append(("best", best))
    for model in ("plain", "bap"):
        found = next((s for s in summaries if s.setting.get("model") == model and s.finished), None)
        if found is not None:
            refs.append((model, found))
    return refs
