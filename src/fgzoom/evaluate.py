"""Evaluation entry: rebuild the model from a checkpoint and test it on a split -> metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from fgzoom.errors import ConfigError
from fgzoom.models.module import FGVCModule
from fgzoom.runtime import instantiate_loggers, resolve_ckpt_path, to_float_dict, write_json

log = logging.getLogger("fgzoom.eval")


def read_checkpoint_meta(path: str) -> dict:
    """The ``fgzoom`` entry of a checkpoint (class names and the run's resolved config)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    meta = checkpoint.get("fgzoom") if isinstance(checkpoint, dict) else None
    if not meta or "hyper_parameters" not in checkpoint:
        raise ConfigError(f"ckpt_path={path}: not an fgzoom checkpoint (no model config inside)")
    return meta


def load_model(path: str) -> FGVCModule:
    """Rebuild the LightningModule stored in ``path`` (no pretrained download; weights come from the file)."""
    try:
        model = FGVCModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise ConfigError(f"ckpt_path={path}: does not match the model it describes ({first})") from e
    return model


def datamodule_for(cfg: DictConfig, meta: dict):
    """``data`` from the command line when given, else the data the checkpoint was trained on."""
    data_cfg = cfg.get("data")
    if not data_cfg:
        saved = (meta.get("config") or {}).get("data")
        if not saved:
            raise ConfigError("the checkpoint holds no data config: pass data=<name> data.root=...")
        data_cfg = OmegaConf.create(saved)
    return hydra.utils.instantiate(data_cfg)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on ``cfg.split`` (test by default); write ``<run dir>/metrics.json``."""
    output_dir = Path(cfg.paths.output_dir)
    path = resolve_ckpt_path(cfg.ckpt_path, str(output_dir))
    meta = read_checkpoint_meta(path)
    datamodule = datamodule_for(cfg, meta)
    datamodule.prepare_data()
    names = datamodule.class_names
    model = load_model(path)
    if model.hparams.class_names is not None and list(model.hparams.class_names) != list(names):
        raise ConfigError(
            f"ckpt_path={path}: trained on {len(model.hparams.class_names)} classes "
            f"({model.hparams.class_names[:3]}...), data has {len(names)} ({names[:3]}...); pass the data it was trained on"
        )
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False, callbacks=[])
    split = cfg.get("split", "test")
    if split == "test":
        results = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    elif split == "val":
        results = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    else:
        raise ConfigError(f"split={split!r}: must be test or val")
    metrics = to_float_dict(results)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "metrics.json", metrics)
    log.info("metrics: %s", {k: round(v, 4) for k, v in metrics.items() if v is not None})
    return metrics
