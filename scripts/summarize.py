"""Summarize a sweep: python scripts/summarize.py <sweep dir> [--out DIR]. See README.md.

Writes results.csv (one row per run), results.md (mean ± std over seeds per setting, failed runs
listed) and results.png (test/acc per setting) into the sweep folder, or into --out.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # works from a checkout even before `pip install -e .`

from fgzoom.errors import FGZoomError  # noqa: E402
from fgzoom.summarize import summarize  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweep_dir", type=Path, help="the multirun folder (holds multirun.yaml and one folder per job)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the results (default: sweep_dir)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        paths = summarize(args.sweep_dir, args.out)
    except FGZoomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
