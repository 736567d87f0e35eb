"""How a sweep's settings and values are written in its tables and plot: a setting's label, and a cell's text
(a missing value is ``–``, a bool ``true``/``false``, an accuracy in percent)."""

from __future__ import annotations

from fgzoom.ops.interpolation import interp_label


def setting_label(setting: dict[str, object], other: str = "") -> str:
    """``plain``, ``bap (no crop)`` or ``<level> / <interpolation>[ / <box> <sampler>][ k=<n>]``, then the
    components that depart from the zoom's defaults (:func:`variant_label`) and ``[<other>]``; the interpolation
    as :func:`setting_interp` writes it, e.g. ``image / bicubic, align_corners=true, antialias``."""
    if setting.get("model") is None:
        label = "?"
    elif setting["model"] == "plain":
        label = "plain"
    elif setting["model"] == "bap":
        label = "bap (no crop)"
    else:
        label = f"{setting['level']} / {setting_interp(setting)}"
        box, sampler = setting.get("box") or "threshold", setting.get("sampler") or "slice"
        if (box, sampler) != ("threshold", "slice"):  # the label of the original crop stays as it was
            label += f" / {box} {sampler}"
        if (setting.get("num_regions") or 1) > 1:
            label += f" k={setting['num_regions']}"
    label += variant_label(setting)
    return f"{label} [{other}]" if other else label


def variant_label(setting: dict[str, object]) -> str:
    """`` + drop`` (attention drop, ``model.loss.drop`` > 0: `` + drop=<w>`` for a weight other than 1) and
    `` fusion=<f>`` (a fusion other than mean_prob), or ``""`` for the zoom model's default components."""
    text = ""
    drop = setting.get("drop")
    if drop:
        text += " + drop" if drop == 1 else f" + drop={drop:g}"
    fusion = setting.get("fusion")
    if fusion not in (None, "mean_prob"):
        text += f" fusion={fusion}"
    return text


def setting_interp(setting: dict[str, object]) -> str:
    """The interpolation of a zoom setting (its ``mode``, ``align_corners`` and ``antialias``) as
    :func:`fgzoom.ops.interpolation.interp_label` writes every interpolation setting."""
    return interp_label(setting.get("mode"), setting.get("align_corners"), bool(setting.get("antialias")))


def cell(value: object) -> str:
    """A table cell: ``–`` for None, ``true``/``false`` for a bool, else ``str(value)``."""
    if value is None:
        return "–"
    return str(value).lower() if isinstance(value, bool) else str(value)


def percent(mean: float | None, std: float | None) -> str:
    """A fraction as ``<mean> ± <std>`` in percent, one decimal (``75.0 ± 2.1``); ``–`` without a mean."""
    if mean is None:
        return "–"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if std is not None else f"{100 * mean:.1f}"


def number(value: object) -> str:
    """A float to four significant digits (``0.0003``), anything else as :func:`cell` writes it."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return cell(value)
