"""Each setting's train-step cost over the plain model's, read from a ``scripts/bench.py step --interp``
JSON, for the "step x plain" column of the paired comparisons; and the bench's row name of a setting."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fgzoom.errors import SummaryError
from fgzoom.ops.interpolation import interp_label


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


def bench_name(setting: dict[str, object]) -> str:
    """The step bench's row name of a setting (``fgzoom.sweeps.runs.setting_of``): ``plain``, ``bap``, or
    ``zoom <level> <sampler> <interpolation>`` (``scripts/bench.py step --interp`` names its rows so), with
    `` + drop`` where the attention-drop branch adds a pass (the fusion costs nothing)."""
    if setting.get("model") in ("plain", "bap"):
        name = str(setting["model"])
    else:
        interp = interp_label(str(setting.get("mode")), setting.get("align_corners"), bool(setting.get("antialias")))
        name = f"zoom {setting.get('level')} {setting.get('sampler')} {interp}"
    return name + (" + drop" if setting.get("drop") and setting.get("model") != "plain" else "")


def legacy_bench_name(model_choice: str) -> str:
    """The row name of bench JSONs written before the ablation became a product of keys, for a ``model=``
    option: ``plain``, or ``zoom <level> <setting>`` for ``interp/<level>/<setting>``."""
    return model_choice if model_choice == "plain" else "zoom " + model_choice.removeprefix("interp/").replace("/", " ")
