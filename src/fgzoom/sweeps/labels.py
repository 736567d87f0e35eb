"""How a sweep's settings and values are written in its tables and plot: a setting's label, and a cell's text
(a missing value is ``–``, a bool ``true``/``false``, an accuracy in percent)."""

from __future__ import annotations


def setting_label(setting: dict[str, object], other: str = "") -> str:
    """``plain`` or ``<level> / <mode>[ ac=<align_corners>][ aa][ / <box> <sampler>][ k=<n>]`` (+ ``[<other>]``)."""
    if setting.get("model") is None:
        label = "?"
    elif setting["model"] == "plain":
        label = "plain"
    else:
        label = f"{setting['level']} / {interp_label(setting)}"
        box, sampler = setting.get("box") or "threshold", setting.get("sampler") or "slice"
        if (box, sampler) != ("threshold", "slice"):  # the label of the original crop stays as it was
            label += f" / {box} {sampler}"
        if (setting.get("num_regions") or 1) > 1:
            label += f" k={setting['num_regions']}"
    return f"{label} [{other}]" if other else label


def interp_label(setting: dict[str, object], long: bool = False) -> str:
    """The interpolation part of a zoom setting: ``<mode>[ ac=<v>][ aa]`` (plot labels) or, ``long``,
    ``<mode>[, align_corners=<v>][, antialias]`` (table cells)."""
    sep, align, antialias = (", ", "align_corners=", "antialias") if long else (" ", "ac=", "aa")
    label = str(setting.get("mode"))
    if setting.get("align_corners") is not None:
        label += f"{sep}{align}{str(setting['align_corners']).lower()}"
    if setting.get("antialias"):
        label += f"{sep}{antialias}"
    return label


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
