"""Summarize a Hydra multirun (e.g. ``experiment=ablate_interp``) into a table and a chart.

:func:`summarize` wires the modules of :mod:`fgzoom.sweeps` that each own one step:

- reading the runs: :mod:`~fgzoom.sweeps.runs` (job folders, grouping by setting) with
  :mod:`~fgzoom.sweeps.expand` (the jobs ``multirun.yaml`` lists, so that those never started show), or
  :mod:`~fgzoom.sweeps.tables` (a ``results.csv``); several sources through :mod:`~fgzoom.sweeps.merge`;
- ``results.csv``: :mod:`~fgzoom.sweeps.tables`, one row per job;
- ``results.md``: :mod:`~fgzoom.sweeps.report`, one row per setting, the seed-paired comparisons
  (:mod:`~fgzoom.sweeps.paired`), failed runs, config drift (:mod:`~fgzoom.sweeps.drift`), an Optuna
  study's section (:mod:`~fgzoom.sweeps.optuna_study`) and each setting's step cost
  (:mod:`~fgzoom.sweeps.step_cost`);
- ``results.png``: :mod:`~fgzoom.sweeps.plots`.

Only the standard library, OmegaConf/Hydra (to read the sweep), scipy and matplotlib are used.
"""

from __future__ import annotations

from pathlib import Path

from fgzoom.errors import SummaryError
from fgzoom.sweeps.merge import merge_runs
from fgzoom.sweeps.optuna_study import read_study
from fgzoom.sweeps.plots import plot
from fgzoom.sweeps.report import write_markdown
from fgzoom.sweeps.runs import INVALID, INVALID_MARKER, Run, collect_runs, group_by_setting
from fgzoom.sweeps.step_cost import read_step_cost
from fgzoom.sweeps.tables import read_csv, write_csv


def _load_source(source: Path) -> list[Run]:
    if source.suffix == ".csv":
        if not source.is_file():
            raise SummaryError(f"{source}: file not found; pass a results.csv or a sweep folder")
        return read_csv(source)
    return collect_runs(source)


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
    invalid = [r for r in runs if r.status == INVALID]  # refused settings of a product of keys: not runs
    runs = [r for r in runs if r.status != INVALID]
    if not runs:
        raise SummaryError(f"{first}: every job is an invalid setting ({INVALID_MARKER}); nothing to summarize")
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
    write_markdown(runs, summaries, paths["md"], title=title, study=study, step=step, invalid=len(invalid))
    plot(summaries, paths["png"])
    return paths
