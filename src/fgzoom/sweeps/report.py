"""``results.md``: the markdown report of a sweep.

One row per setting: mean ± std over seeds of ``val/test`` ``acc`` (the final, fused prediction),
``acc_raw``, ``acc_zoom`` and ``acc_macro`` (per-class mean), in percent; the number of seeds; the rank by
mean ``val/acc`` (the best setting is marked; the test split never selects). Then the seed-paired
comparisons against the plain model, the bap control (the zoom model without the crop, where the sweep ran it:
a zoom row's "vs bap" is what the crop adds) and the best setting. Jobs that failed, are unfinished or never started
are listed under "Failed or unfinished runs"; config keys that differ between jobs without being swept are
flagged under "Config differences". An Optuna study opens with its own section (:func:`study_lines`).
"""

from __future__ import annotations

from pathlib import Path

from fgzoom.sweeps.drift import config_differences
from fgzoom.sweeps.labels import cell, percent, setting_interp, setting_label
from fgzoom.sweeps.optuna_study import OptunaStudy, study_lines
from fgzoom.sweeps.paired import PairedComparison, paired_compare
from fgzoom.sweeps.runs import (
    OK,
    SETTING_KEYS,
    VARIANT_KEYS,
    Run,
    SettingSummary,
    best_setting,
    has_variant,
    reference_settings,
)
from fgzoom.sweeps.step_cost import StepCost, bench_name, legacy_bench_name

TABLE_METRICS = ("acc", "acc_raw", "acc_zoom", "acc_macro")  # shown as val/<m> and test/<m>
SPLITS = ("val", "test")


def paired_cell(c: PairedComparison | None, seeds: int | None = None) -> str:
    """``+1.2 [-0.3, +2.7], 2/1, noise``: mean difference in points, 95% interval, seeds better/worse and the
    verdict; ``n=<k>`` is added when the shared seeds are fewer than the row's own ``seeds``."""
    if c is None:
        return "–"
    interval = "" if c.ci_low is None else f" [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]"
    verdict = "noise" if c.within_noise else ("**better**" if c.mean_diff > 0 else "**worse**")
    shared = "" if c.seeds == seeds else f", n={c.seeds}"
    return f"{100 * c.mean_diff:+.1f}{interval}, {c.wins}/{c.losses}{shared}, {verdict}"


def _model_choice(summary: SettingSummary) -> str | None:
    """The ``model=`` option the setting's runs were launched with (None when no override names one)."""
    return next((o.split("=", 1)[1] for r in summary.runs for o in r.overrides if o.startswith("model=")), None)


def variant_columns(summaries: list[SettingSummary]) -> list[str]:
    """The ``VARIANT_KEYS`` that get a column: those some setting departs from the zoom's default in (a sweep of
    interpolation or boxes has none, and its tables stay as they were)."""
    return [k for k in VARIANT_KEYS if any(has_variant(s.setting, k) for s in summaries)]


def comparison_lines(
    summaries: list[SettingSummary], metric: str = "test/acc", step: StepCost | None = None
) -> list[str]:
    """The markdown section that answers the sweep: per setting its seeds, ``metric`` per seed and mean ±
    std, mean val/acc, the seed-paired differences against the plain model, the bap control (where the sweep
    ran it) and the best setting, and (with ``step``) the train step's cost against the plain model's."""
    refs = dict(reference_settings(summaries))
    if not refs:
        return []
    zoom = [s for s in summaries if s.setting.get("model") == "zoom"]
    extra = [k for k in ("box", "num_regions") if len({s.setting.get(k) for s in zoom}) > 1]
    variants = variant_columns(summaries)
    has_other = any(s.other for s in summaries)
    best, plain, bap = refs.get("best"), refs.get("plain"), refs.get("bap")
    lines = ["## Paired comparisons", "",
             f"{metric} in %: per seed, then mean ± std over seeds; val/acc in % (mean ± std). \"vs plain\" and "
             f"\"vs best\": the setting's {metric} minus the reference's, paired by seed, in points: mean [95% t "
             "interval], seeds better/worse (and `n=` seeds compared where fewer than the row's), *noise* when "
             "the interval contains 0, else **better**/**worse**. The best setting is the one with the highest "
             f"mean val/acc; the comparison is on {metric}."]
    if bap is not None:
        lines[-1] += (f" \"vs bap\": the same against `{bap.label}`, the zoom model without the crop (same head, "
                      "BAP classifier and losses, predicting from the raw branch): for a zoom row, what the crop adds "
                      "(with that row's fusion and attention drop), where \"vs plain\" is what crop and head add "
                      "together.")
    if step is not None:
        lines[-1] += (f" \"step x plain\": the train step's time over the plain model's, from `{step.source}` "
                      f"({step.measured_on}).")
    header = ["level", "sampler", "mode", *(["box"] if "box" in extra else []),
              *(["regions"] if "num_regions" in extra else []), *variants, *(["other"] if has_other else []),
              "seeds", f"{metric} % per seed", f"{metric} %", "val/acc %", "vs plain (points, 95% CI)",
              *(["vs bap (points, 95% CI)"] if bap is not None else []),
              "vs best (points, 95% CI)", *(["step x plain"] if step is not None else [])]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        seeds = len(s.finished)
        if s.setting.get("model") in ("plain", "bap"):
            name = "plain (no zoom)" if s.setting["model"] == "plain" else "bap (no crop)"
            cells = [name, "–", "–", *(cell(s.setting.get(k)) if s.setting["model"] == "bap" else "–" for k in extra)]
        else:
            cells = [str(s.setting.get("level")), str(s.setting.get("sampler")), setting_interp(s.setting),
                     *(cell(s.setting.get(k)) for k in extra)]
        cells += [cell(s.setting.get(k)) for k in variants]
        cells += [s.other or "–"] if has_other else []
        per_seed = s.by_seed(metric)
        cells += [str(seeds), " / ".join(f"{100 * per_seed[k]:.1f}" for k in sorted(per_seed)) or "–",
                  percent(s.mean(metric), s.std(metric)), percent(s.mean("val/acc"), s.std("val/acc"))]
        for ref in (plain, *([bap] if bap is not None else [])):
            cells.append("–" if ref is None or s is ref
                         else paired_cell(paired_compare(s.by_seed(metric), ref.by_seed(metric)), seeds))
        cells.append("**best by val/acc**" if s is best
                     else paired_cell(paired_compare(s.by_seed(metric), best.by_seed(metric)), seeds))
        if step is not None:
            choice = _model_choice(s)  # bench JSONs of the earlier model=interp/... sweeps name rows by it
            ratio = step.ratios.get(bench_name(s.setting), step.ratios.get(legacy_bench_name(choice or "")))
            cells.append("–" if ratio is None else f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_markdown(
    runs: list[Run], summaries: list[SettingSummary], path: Path, title: str, study: OptunaStudy | None = None,
    step: StepCost | None = None, invalid: int = 0,
) -> None:
    """Write the report of ``runs`` (grouped as ``summaries``) to ``path``, under the heading ``title``;
    ``invalid``: how many jobs of the sweep were settings its config check refused (left out)."""
    metric_keys = [f"{split}/{m}" for m in TABLE_METRICS for split in SPLITS]
    best = best_setting(summaries)
    ranked = sorted((s for s in summaries if s.mean("val/acc") is not None), key=lambda s: -s.mean("val/acc"))
    rank = {id(s): i + 1 for i, s in enumerate(ranked)}
    finished = sum(r.status == OK for r in runs)
    has_other = any(s.other for s in summaries)
    differences = config_differences(runs)

    lines = [f"# {title}", ""]
    lines.append(
        f"{finished} of {len(runs)} runs finished"
        + (f" ({invalid} more jobs were combinations of the swept keys that the config check refuses, e.g. "
           "align_corners with a nearest mode, and are left out)" if invalid else "")
        + ". Mean ± std over seeds, accuracy in %; "
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
            f"(val/acc {percent(best.mean('val/acc'), best.std('val/acc'))}, "
            f"test/acc {percent(best.mean('test/acc'), best.std('test/acc'))}, "
            f"{len(best.values('val/acc'))} seeds)."
        )
        lines.append("")
    if study is not None:
        lines += study_lines(study, runs)
        lines += ["## Settings", ""]
    keys = [*SETTING_KEYS, *variant_columns(summaries)]
    header = ["rank", *keys, *(["other"] if has_other else []), "seeds", *metric_keys]
    lines.append("| " + " | ".join(header) + " |")
    text_columns = len(keys) + has_other
    lines.append("|" + "|".join(["---:", *["---"] * text_columns, *["---:"] * (1 + len(metric_keys))]) + "|")
    for s in summaries:
        r = rank.get(id(s))
        rank_cell = "–" if r is None else (f"**{r} (best)**" if s is best else str(r))
        cells = [rank_cell, *(cell(s.setting.get(k)) for k in keys)]
        cells += [s.other] if has_other else []
        cells.append(str(len(s.finished)))
        cells += [percent(s.mean(k), s.std(k)) for k in metric_keys]
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
                f"| {run.job} | {run.status} | {label} | {cell(run.seed)} | "
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
