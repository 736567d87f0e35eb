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
    apart from the seed agree on it. Keys under ``paths`` are never a difference: they say where the
    checkout ran (jobs of one study may run from two clones), not what it ran.
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
        if not is_swept or any(len(v) > 1 for v in per_group.values()):
            differences[key] = values
    return differences
