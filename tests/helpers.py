"""Helpers the tests share: the tiny synthetic set's spec, config composition as the entry scripts do it, and
running a script as a user would."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
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


def run_script_here(script: str, *overrides: str) -> subprocess.CompletedProcess:
    """Run ``scripts/<script>`` with ``overrides`` as ``python scripts/<script>`` does (its ``__main__``, Hydra's
    command-line parsing, the one-line error handler), but in this process: no interpreter, torch and Lightning
    start-up, about 5 s less per call. Returns what :func:`run_script` returns (exit status, stdout, stderr). Use
    :func:`run_script` where a separate process is the point: environment read at import, signals, a kill."""
    path = ROOT / "scripts" / script
    argv, out, err, code = sys.argv, io.StringIO(), io.StringIO(), 0
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    GlobalHydra.instance().clear()
    sys.argv = [str(path), *overrides]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        for handler in root_logger.handlers[:]:  # the run's log file and console handlers (Hydra's job logging)
            if handler not in handlers:
                root_logger.removeHandler(handler)
                handler.close()
        for handler in handlers:  # and what Hydra's logging config took away (pytest's capture)
            if handler not in root_logger.handlers:
                root_logger.addHandler(handler)
        root_logger.setLevel(level)
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def forbid_host_reads(monkeypatch: pytest.MonkeyPatch):
    """Inside the block, reading a tensor value back to the host (``item``, ``tolist``, ``bool``, ``int``,
    ``float``) raises AssertionError: what a CUDA sync would be."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a tensor value was read back to the host")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
            m.setattr(torch.Tensor, name, forbidden)
        yield
