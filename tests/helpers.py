"""Helpers the tests share: the tiny synthetic set's spec, config composition as the entry scripts do it, and
running a script as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

TINY_SYNTHETIC = {
    "num_classes": 4,
    "train_per_class": 6,
    "test_per_class": 3,
    "image_size": 48,
    "part_size": [7, 9],
    "num_decoys": 1,
    "num_clutter": 4,
    "seed": 0,
}


def tiny_overrides(data_root: Path) -> list[str]:
    """Overrides that make any train/eval config run in seconds on a CPU."""
    synth = [f"data.reader_options.synthetic.{k}={v}" for k, v in TINY_SYNTHETIC.items() if k != "part_size"]
    return [
        f"data.root={data_root}",
        *synth,
        "data.reader_options.synthetic.part_size=[7,9]",
        "data.image_size=48",
        "data.batch_size=4",
        "data.num_workers=0",
        "model.backbone.name=resnet18",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "callbacks.rich_progress_bar=null",
    ]


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``configs/<config_name>`` like the entry scripts do, with the run folder in ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.log_dir = str(output_dir / "logs")
            cfg.paths.root_dir = str(ROOT)
    return cfg


SCRIPT_ENV = dict(os.environ, PYTHONWARNINGS="ignore", HYDRA_FULL_ERROR="0")


def script_command(script: str, *overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / script), *overrides]


def run_script(
    script: str, *overrides: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``scripts/<script>`` in a subprocess like a user would (``env`` adds variables)."""
    return subprocess.run(
        script_command(script, *overrides), cwd=ROOT, env={**SCRIPT_ENV, **(env or {})}, capture_output=True,
        text=True, timeout=timeout,
    )


def add_trainer_callbacks(monkeypatch: pytest.MonkeyPatch, *callbacks) -> None:
    """Make ``fgzoom.cli.train.train`` append ``callbacks`` (probes) to the Trainer it builds."""
    from fgzoom.cli import train as train_module

    build = train_module.build

    def build_with_callbacks(cfg):
        datamodule, module, trainer = build(cfg)
        trainer.callbacks.extend(callbacks)
        return datamodule, module, trainer

    monkeypatch.setattr(train_module, "build", build_with_callbacks)
