"""``results.png``: mean ``test/acc`` ± std per setting, bars grouped by zoom level (the bap control, the zoom
model without the crop, in a group of its own), the plain model as a reference line; below, each setting's
seed-paired difference to the plain model (else the best setting) with its 95% interval."""

from __future__ import annotations

from pathlib import Path

from fgzoom.sweeps.labels import setting_interp, variant_label
from fgzoom.sweeps.paired import paired_compare
from fgzoom.sweeps.runs import LEVEL_ORDER, SettingSummary, reference_settings


def plot_labels(zoom: list[SettingSummary]) -> list[str]:
    """The x label of each zoom setting in the plot (its level is the bar's colour): the interpolation, led
    by the box rule and sampler and followed by the region count where these vary across the sweep (so
    ``slice bilinear`` and ``continuous bilinear`` get bars of their own), then the components that depart
    from the zoom's defaults (``+ drop``, ``fusion=raw``) and any other override. The bap control is
    ``bap (no crop)``."""
    crops = [s for s in zoom if s.setting.get("model") != "bap"]
    varying = [k for k in ("box", "sampler", "num_regions") if len({s.setting.get(k) for s in crops}) > 1]
    labels = []
    for s in zoom:
        if s.setting.get("model") == "bap":
            text = "bap (no crop)"
        else:
            prefix = "".join(f"{s.setting.get(k)} " for k in ("box", "sampler") if k in varying)
            regions = f" k={s.setting.get('num_regions')}" if "num_regions" in varying else ""
            text = prefix + setting_interp(s.setting) + regions
        labels.append(text + variant_label(s.setting) + (f"\n{s.other}" if s.other else ""))
    return labels


def _group(s: SettingSummary) -> str:
    """The bar group (colour) of a setting: its zoom level, or ``bap`` for the control without the crop."""
    return "bap" if s.setting.get("model") == "bap" else str(s.setting["level"])


def plot(summaries: list[SettingSummary], path: Path, metric: str = "test/acc") -> None:
    """Bar chart of mean ``metric`` ± std per setting, grouped by level; plain as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoom = [s for s in summaries if s.setting["model"] != "plain" and s.mean(metric) is not None]
    levels = [
        lv
        for lv in ("bap", *LEVEL_ORDER, *sorted({_group(s) for s in zoom}))
        if any(_group(s) == lv for s in zoom)
    ]
    levels = list(dict.fromkeys(levels))

    labels = dict(zip(map(id, zoom), plot_labels(zoom), strict=True))

    def x_label(s: SettingSummary) -> str:
        return labels[id(s)]

    categories = list(dict.fromkeys(x_label(s) for s in zoom))
    refs = dict(reference_settings(summaries))
    reference = refs.get("plain") or refs.get("best")
    paired = {id(s): paired_compare(s.by_seed(metric), reference.by_seed(metric))
              for s in zoom if reference is not None and s is not reference}
    show_paired = any(c is not None for c in paired.values())
    fig, axes = plt.subplots(2 if show_paired else 1, 1, squeeze=False, sharex=True, layout="constrained",
                             figsize=(max(6.0, 0.9 * len(categories) + 2), 7.5 if show_paired else 4.5))
    ax = axes[0][0]
    # side by side: the levels of one interpolation; bap's label is its own, so its bar stands centred
    crop_levels = [lv for lv in levels if lv != "bap"]
    width = 0.8 / max(1, len(crop_levels))
    shift = {lv: (i - (len(crop_levels) - 1) / 2) * width for i, lv in enumerate(crop_levels)} | {"bap": 0.0}
    for level in levels:
        by_label = {x_label(s): s for s in zoom if _group(s) == level}
        xs = [j + shift[level] for j, c in enumerate(categories) if c in by_label]
        picked = [by_label[c] for c in categories if c in by_label]
        ax.bar(
            xs,
            [100 * s.mean(metric) for s in picked],
            width,
            yerr=[100 * (s.std(metric) or 0.0) for s in picked],
            capsize=3,
            label="bap (no crop)" if level == "bap" else f"level={level}",
        )
    for s in summaries:
        if s.setting["model"] == "plain" and s.mean(metric) is not None:
            mean, std = 100 * s.mean(metric), 100 * (s.std(metric) or 0.0)
            ax.axhline(
                mean,
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"plain{f' [{s.other}]' if s.other else ''} (no zoom)",
            )
            if std:
                ax.axhspan(mean - std, mean + std, color="black", alpha=0.08)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{metric}: mean ± std over seeds per setting")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    if show_paired:  # seed-paired difference to the reference with its 95% interval
        name = "plain" if reference is refs.get("plain") else f"best ({reference.label})"
        bottom = axes[1][0]
        for level in levels:
            picked = [(j, paired[id(s)]) for j, c in enumerate(categories) for s in zoom
                      if x_label(s) == c and _group(s) == level and paired.get(id(s)) is not None]
            xs = [j + shift[level] for j, _ in picked]
            means = [100 * c.mean_diff for _, c in picked]
            errors = [[100 * (c.mean_diff - c.ci_low) if c.ci_low is not None else 0.0 for _, c in picked],
                      [100 * (c.ci_high - c.mean_diff) if c.ci_high is not None else 0.0 for _, c in picked]]
            bottom.errorbar(xs, means, yerr=errors, fmt="o", capsize=4,
                            label="bap (no crop)" if level == "bap" else f"level={level}")
        bottom.axhline(0.0, color="black", linewidth=1)
        bottom.set_ylabel(f"{metric} difference (points)")
        bottom.set_title(f"minus {name}, paired by seed: mean, 95% t interval (crossing 0 = noise)", fontsize="medium")
        ax = bottom
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    fig.savefig(path, dpi=120)
    plt.close(fig)
