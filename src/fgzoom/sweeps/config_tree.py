"""Nested run configs (``{"a": {"b": 1}}``) as flat dotted keys (``{"a.b": 1}``), to compare runs key by key."""

from __future__ import annotations

from collections.abc import Mapping


def flatten_config(config: Mapping, prefix: str = "") -> dict[str, object]:
    """Every leaf of ``config`` under its dotted key; a leaf is any value but a non-empty mapping (lists and
    empty mappings are kept as they are)."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat
