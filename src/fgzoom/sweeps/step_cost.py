"""Each setting's train-step cost over the plain model's, read from a ``scripts/bench.py step --interp``
JSON, for the "step x plain" column of the paired comparisons; and the bench's row name of a setting."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fgzoom.errors import SummaryError


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
