"""Config drift: run config keys that differ between the jobs of a sweep although the sweep does not vary
them (e.g. a config file edited while the sweep ran), so that a table row may average different setups."""

from __future__ import annotations

from fgzoom.sweeps.labels import cell
from fgzoom.sweeps.runs import GROUP_KEYS, Run


def config_differences(runs: list[Run]) -> dict[str, dict[str, list[str]]]:
    """Config keys whose value differs between jobs although the sweep does not explain it (e.g. a
    config file edited while the sweep ran): ``{key: {value: [jobs]}}``.

    A difference is explained when the key lies under an override's key (``model.zoom.stage=...``, or
    a group such as ``model=...``) or under ``seed``/``model.zoom``, and runs with the same overrides
    apart from the seed agree on it. A difference is also explained when the runs that differ in it chose
    different config groups (``experiment=plain_reference`` against ``experiment=ablate_interp`` sets its
    own ``task_name``) and the runs with the same group choices agree on it. Keys under ``paths`` are never a
    difference: they say where the checkout ran (jobs of one study may run from two clones), not what it ran.
    """
    explained = {k.lstrip("+~") for r in runs for k in (o.partition("=")[0] for o in r.overrides)}
    explained |= {"seed", "model.zoom"}
    with_config = [r for r in runs if r.config]

    def same_job_but_seed(run: Run) -> tuple:
        rest = sorted(o for o in run.overrides if o.partition("=")[0].lstrip("+~") != "seed")
        return (*rest, *(str(run.setting.get(k)) for k in GROUP_KEYS), run.other)

    differences: dict[str, dict[str, list[str]]] = {}
    for key in sorted({k for r in with_config for k in r.config}):
        if key == "seed" or key.startswith(("seed.", "paths.")):
            continue
        values: dict[str, list[str]] = {}
        per_group: dict[tuple, set[str]] = {}
        for run in with_config:
            value = cell(run.config.get(key, "<missing>"))
            values.setdefault(value, []).append(run.job)
            per_group.setdefault(same_job_but_seed(run), set()).add(value)
        if len(values) < 2:
            continue
        is_swept = any(key == e or key.startswith(f"{e}.") for e in explained)
        if is_swept and all(len(v) == 1 for v in per_group.values()):
            continue
        per_choice: dict[tuple, set[str]] = {}
        for run in with_config:
            per_choice.setdefault(_group_choices(run), set()).add(cell(run.config.get(key, "<missing>")))
        if len(per_choice) < 2 or any(len(v) > 1 for v in per_choice.values()):
            differences[key] = values
    return differences


def _group_choices(run: Run) -> tuple[str, ...]:
    """The config groups a run's overrides chose (``experiment=...``, ``data=...``: keys without a dot)."""
    return tuple(sorted(o for o in run.overrides if "." not in o.partition("=")[0] and "=" in o
                        and o.partition("=")[0].lstrip("+~") != "seed"))
