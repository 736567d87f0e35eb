"""Summarize a sweep: summarize.py <sweep dir | results csv> [...] [--out DIR] [--name N] [--step-bench JSON].

Writes results.csv (one row per run), results.md (mean ± std over seeds per setting, seed-paired
comparisons, failed runs listed) and results.png (test/acc per setting, paired differences) into the sweep
folder, or into --out. Given a results csv (e.g. one under docs/), draws <name>.md and <name>.png from it.
Given several (folders and/or csv files: one sweep run in parts), merges them by job overrides into
<name>.csv/.md/.png. --step-bench adds each setting's train-step cost (a `scripts/bench.py step --interp`
JSON) to the paired comparisons. See README.md.
"""

import argparse
import logging
import sys
from pathlib import Path

import project_root  # noqa: F401  (PROJECT_ROOT, src/ on sys.path)

from fgzoom.errors import FGZoomError
from fgzoom.sweeps.summarize import summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweep_dir",
        type=Path,
        nargs="+",
        help="the multirun folder (holds multirun.yaml and one folder per job), or a results csv; "
        "several are merged into one sweep",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the results (default: sweep_dir, or beside the csv)"
    )
    parser.add_argument(
        "--name", default=None, help="file stem of the results (default: results, or the first csv's stem)"
    )
    parser.add_argument(
        "--step-bench", type=Path, default=None,
        help="a JSON of `scripts/bench.py step --interp --out FILE`: adds each setting's step time over plain",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        paths = summarize(args.sweep_dir, args.out, args.name, step_bench=args.step_bench)
    except FGZoomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
