"""Typed configs (``BackboneConfig``, ``ZoomConfig``) from the mappings a config file or a test holds."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypeVar

from fgzoom.errors import ConfigError

T = TypeVar("T")


def config_from(cls: type[T], options: Mapping | T, key: str) -> T:
    """``options`` as a ``cls`` dataclass: an instance is returned as is, a mapping becomes ``cls(**options)``
    (Hydra's own keys such as ``_target_`` are ignored). An unknown key is one ConfigError naming
    ``<key>.<name>`` and the valid keys, instead of the dataclass's TypeError."""
    if isinstance(options, cls):
        return options
    if not isinstance(options, Mapping):
        raise ConfigError(f"{key}={options!r}: expected a mapping of {cls.__name__} keys")
    fields = [f.name for f in dataclasses.fields(cls)]
    values = {k: v for k, v in options.items() if not str(k).startswith("_")}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key; valid keys of {key}: {', '.join(fields)}")
    return cls(**values)
