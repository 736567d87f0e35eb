"""Shared fixtures: a tiny synthetic set for the session and the train config composed into tmp_path (the helpers
they use are in ``tests/helpers.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers import ROOT, TINY_SYNTHETIC, compose_config, tiny_overrides

# tests that load a script in-process (runpy, importlib) see scripts/ on sys.path, as `python scripts/x.py` does
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A tiny synthetic dataset shared by the session (generated once)."""
    from fgzoom.data.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("data") / "synthetic"
    spec = dict(TINY_SYNTHETIC, part_size=tuple(TINY_SYNTHETIC["part_size"]))
    generate(root, SyntheticSpec(**spec))
    return root


@pytest.fixture
def train_cfg(tmp_path, synthetic_root) -> DictConfig:
    return compose_config("train.yaml", tiny_overrides(synthetic_root), tmp_path / "run")


