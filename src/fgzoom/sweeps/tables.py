"""``results.csv``: one row per run (``job``, ``status``, the setting columns, ``seed``, ``other``,
``overrides``, ``dir`` and every metric), written from the runs and read back into them, so that a csv kept
under ``docs/`` without its sweep folder redraws the same tables and plot."""

from __future__ import annotations

import csv
from pathlib import Path

from fgzoom.errors import SummaryError
from fgzoom.sweeps.runs import GROUP_KEYS, VARIANT_DEFAULTS, VARIANT_KEYS, Run, finite


def write_csv(runs: list[Run], path: Path) -> None:
    """One row per run; the metric columns are every metric any run has, sorted."""
    metric_keys = sorted({k for r in runs for k in r.metrics})
    columns = ["job", "status", *GROUP_KEYS, "seed", "other", "overrides", "dir", *metric_keys]
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
            row.update({k: _csv_value(run.setting.get(k)) for k in GROUP_KEYS})
            row.update({k: _csv_value(run.metrics.get(k)) for k in metric_keys})
            writer.writerow(row)


def read_csv(path: Path) -> list[Run]:
    """The runs of a ``results.csv`` :func:`write_csv` wrote (e.g. one committed under ``docs/``), so its
    tables and plot can be drawn again without the sweep folder."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "status" not in rows[0]:
        raise SummaryError(f"{path}: not a results.csv written by scripts/summarize.py (no rows or no status column)")
    fixed = {"job", "status", *GROUP_KEYS, "seed", "other", "overrides", "dir"}
    return [
        Run(
            job=row["job"],
            status=row["status"],
            overrides=row["overrides"].split(),
            setting=_setting(row),
            seed=_from_csv("seed", row["seed"]),
            metrics={k: finite(v) if v != "" else None for k, v in row.items() if k not in fixed},
            other=row["other"],
        )
        for row in rows
    ]


def _setting(row: dict[str, str]) -> dict[str, object]:
    """The setting of a csv row. A csv written before the ``VARIANT_KEYS`` columns existed holds zoom runs at the
    zoom's default components (``VARIANT_DEFAULTS``), so that it merges with a sweep folder of the same jobs."""
    setting = {k: _from_csv(k, row.get(k, "")) for k in GROUP_KEYS}
    if setting["model"] == "zoom":
        for key in VARIANT_KEYS:
            if key not in row:
                setting[key] = VARIANT_DEFAULTS[key]
    return setting


def _relative(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it (a csv kept under docs/ names no
    machine's folders), else as it is."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else value


def _from_csv(key: str, text: str) -> object:
    """A setting or seed cell of ``results.csv`` back to its value (inverse of ``_csv_value``)."""
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    if key in ("seed", "num_regions") and text.lstrip("-").isdigit():
        return int(text)
    if key == "drop":
        return float(text)
    return text
