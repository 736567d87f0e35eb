"""Cluttered animals from real silhouettes: generated on first use from animal-mnist's files, then read as an
ImageFolder."""

from __future__ import annotations

from pathlib import Path

from fgzoom.data.animal_clutter import AnimalClutterSpec, generate
from fgzoom.data.index import DatasetIndex
from fgzoom.data.readers.clutter import read_generated, spec_and_source


def prepare_animal_clutter(root: str | Path, animal_clutter: dict | None = None) -> None:
    """Generate the dataset under ``root`` unless an identical one is there (runs on one process)."""
    spec, source = spec_and_source(AnimalClutterSpec, animal_clutter)
    generate(root, spec, source)


def read_animal_clutter(root: str | Path, animal_clutter: dict | None = None) -> DatasetIndex:
    """Index the generated dataset; :func:`prepare_animal_clutter` must have run (animal-mnist is not needed here)."""
    spec, _ = spec_and_source(AnimalClutterSpec, animal_clutter)
    return read_generated(root, spec, "animal_clutter")
