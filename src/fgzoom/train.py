"""Training entry: compose -> validate -> instantiate -> fit -> pick best on val -> test -> metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from fgzoom.errors import ConfigError, NonFiniteLossError
from fgzoom.loggers import finalize_loggers
from fgzoom.runtime import (
    fill_normalization,
    instantiate_callbacks,
    instantiate_loggers,
    pin_run_dir,
    record_normalization,
    resolve_ckpt_path,
    resolved_container,
    to_float_dict,
    validate_config,
    write_json,
)
from fgzoom.sweep_resume import is_sweep_job, previous_run

log = logging.getLogger("fgzoom.train")


def build(cfg: DictConfig):
    """Instantiate datamodule, model, callbacks, loggers and trainer from a composed config."""
    validate_config(cfg)
    fill_normalization(cfg)
    datamodule = hydra.utils.instantiate(cfg.data, seed=cfg.get("seed"))
    datamodule.prepare_data()
    datamodule.read_index()  # a broken dataset layout fails here, before any model is built
    record_normalization(cfg, datamodule)
    model = hydra.utils.instantiate(
        cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.class_names
    )
    model.run_config = resolved_container(cfg)
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = instantiate_callbacks(cfg.get("callbacks"), has_logger=bool(loggers))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, model, trainer


def check_optimized_metric(name: str | None) -> None:
    """``optimized_metric`` (what a sweeper optimizes) must be a ``val/*`` key: the test split never selects."""
    if name is not None and not str(name).startswith("val/"):
        raise ConfigError(
            f"optimized_metric={name}: a sweep selects on the validation split; use a val/* key of "
            "metrics.json (val/acc, val/acc_macro, val/loss, ...)"
        )


def optimized_value(metrics: dict[str, float | None], name: str | None) -> float | None:
    """The value a Hydra sweeper optimizes: ``metrics[name]`` as a float (NaN when the metric was not
    finite, which Optuna records as a failed trial); None when ``name`` is None.

    Raises:
        ConfigError: ``name`` is not a key of ``metrics``.
    """
    if name is None:
        return None
    if name not in metrics:
        raise ConfigError(
            f"optimized_metric={name}: not among this run's metrics; use one of {', '.join(sorted(metrics))}"
        )
    value = metrics[name]
    return float("nan") if value is None else float(value)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then report ``val/*`` of the best checkpoint (by ``val/acc``) and ``test/*`` of that checkpoint.

    Writes ``<run dir>/metrics.json`` and ``<run dir>/config.yaml``; returns the metrics. A sweep job whose
    folder holds a finished run of the same config returns its metrics instead, and a stopped one resumes
    (``skip_finished``; :mod:`fgzoom.sweep_resume`).
    """
    check_optimized_metric(cfg.get("optimized_metric"))
    output_dir = Path(cfg.paths.output_dir)
    pin_run_dir(str(output_dir))
    ckpt_path = cfg.get("ckpt_path")
    if is_sweep_job() and cfg.get("skip_finished", True):  # the same sweep run again: only what is missing
        finished, resume = previous_run(cfg, output_dir)
        if finished is not None:
            return finished
        ckpt_path = ckpt_path or resume
    ckpt_path = resolve_ckpt_path(ckpt_path, str(output_dir))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(model.run_config))

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if best is None and not cfg.get("train", True):
        best = ckpt_path
    metrics: dict[str, float] = {}
    metrics.update(trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0])
    if cfg.get("test", True):
        metrics.update(trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0])
    metrics = {k: v for k, v in to_float_dict(metrics).items() if k.startswith(("val/", "test/"))}
    finalize_loggers(trainer.loggers)
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        log.info("best checkpoint: %s", best)
        log.info("metrics: %s", {k: round(v, 4) for k, v in metrics.items() if v is not None})
    return metrics


def objective(cfg: DictConfig) -> float | None:
    """What ``scripts/train.py`` returns to a Hydra sweeper: ``optimized_metric`` of the run when it is set
    (``hparams_search=optuna``), else ``val/acc``. Under ``optimized_metric`` a run whose loss diverged
    (``NonFiniteLossError``, common at the high end of a learning-rate search) is a failed trial: one
    warning line and NaN, which Optuna records as failed and moves on from, instead of ending the study."""
    name = cfg.get("optimized_metric")
    try:
        metrics = train(cfg)
    except NonFiniteLossError as e:
        if name is None:
            raise
        log.warning("trial failed, reported to the sweeper as NaN: %s", e)
        return float("nan")
    return optimized_value(metrics, name) if name else metrics.get("val/acc")
