"""Training entry: compose -> validate -> instantiate -> fit -> pick best on val -> test -> metrics.json
(``refit=true``: then train again on train + val for the selected epochs and test that model)."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from fgzoom.callbacks.loggers import finalize_loggers
from fgzoom.callbacks.preemption import PreemptionCheckpoint, RunRequeued
from fgzoom.checkpoints.io import (
    atomic_write,
    check_resumable,
    read_checkpoint,
    safe_checkpoint_types,
    trusts_checkpoints,
)
from fgzoom.cli.cluster import init_restarted_process_group, newest_checkpoint, scheduler_run_id
from fgzoom.cli.resume import is_sweep_job, previous_run
from fgzoom.cli.runtime import (
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
from fgzoom.errors import ConfigError, NonFiniteLossError

log = logging.getLogger("fgzoom.cli.train")
EXIT_REQUEUED = 3  # exit status of a run stopped for a requeue: not finished, not failed


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
    if not PreemptionCheckpoint.applies(cfg.get("trainer")):  # only under SLURM, with checkpointing on
        callbacks = [c for c in callbacks if not isinstance(c, PreemptionCheckpoint)]
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
    """Fit, then report ``val/*`` of the best checkpoint (by ``val/acc``) and ``test/*`` of that checkpoint
    (``refit=true``: ``test/*`` of the model refit on train + val, :func:`refit_and_test`).

    Writes ``<run dir>/metrics.json`` and ``<run dir>/config.yaml``; returns the metrics. A sweep job (or a job
    a scheduler requeued or restarted, :mod:`fgzoom.cli.cluster`) whose
    folder holds a finished run of the same config returns its metrics instead, and a stopped one resumes
    (``skip_finished``; :mod:`fgzoom.cli.resume`).
    """
    check_optimized_metric(cfg.get("optimized_metric"))
    refit = bool(cfg.get("refit", False))
    if refit and not cfg.get("train", True):
        raise ConfigError("refit=true refits a run it trains; drop refit=true to evaluate a checkpoint (train=false)")
    output_dir = Path(cfg.paths.output_dir)
    pin_run_dir(str(output_dir))
    ckpt_path = cfg.get("ckpt_path")
    # the same sweep run again, or a job the scheduler requeued or restarted: only what is missing
    if (is_sweep_job() or scheduler_run_id() is not None) and cfg.get("skip_finished", True):
        finished, resume = previous_run(cfg, output_dir)
        if finished is not None:
            return finished
        if resume is not None and ckpt_path is not None:  # this run's own progress beats where it started from
            log.info("ckpt_path=%s: this run folder holds a newer state, resuming from %s instead", ckpt_path, resume)
        ckpt_path = resume or ckpt_path
    ckpt_path = resolve_ckpt_path(ckpt_path, str(output_dir))
    check_resumable(ckpt_path, trust=trusts_checkpoints(cfg))
    metrics, best, is_main = fit_and_evaluate(cfg, ckpt_path, test=cfg.get("test", True) and not refit)
    if refit:
        metrics.update(refit_and_test(cfg, best, resume=ckpt_path is not None))
    if is_main:
        write_json(output_dir / "metrics.json", metrics)
        log.info("best checkpoint: %s", best)
        log.info("metrics: %s", {k: round(v, 4) for k, v in metrics.items() if v is not None})
    return metrics


def fit_and_evaluate(cfg: DictConfig, ckpt_path: str | None, test: bool) -> tuple[dict[str, float], str | None, bool]:
    """Seed, build, write ``<run dir>/config.yaml``, fit (unless ``train=false``; ``ckpt_path`` resumes), then
    ``val/*`` (and with ``test`` ``test/*``) of the checkpoint that counts: the best by ``val/acc`` when a
    monitoring checkpoint callback runs, else ``ckpt_path`` when not training, else the weights in memory (the
    last epoch's; None). Returns (metrics, that checkpoint, whether this is rank 0)."""
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    if trainer.is_global_zero:  # atomic: a restarted rank may read it while rank 0 writes (sweep_resume)
        with atomic_write(output_dir / "config.yaml") as f:
            f.write(OmegaConf.to_yaml(model.run_config).encode())
    # Lightning reads ckpt_path (resume) and the chosen checkpoint weights-only unless the user trusts the file
    weights_only = not trusts_checkpoints(cfg)
    init_restarted_process_group(trainer)
    if cfg.get("train", True):
        with safe_checkpoint_types(), warnings.catch_warnings():
            # the datamodule's state resumes a mid-epoch checkpoint exactly; Lightning only checks the loader
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=weights_only)
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    chosen = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if chosen is None and not cfg.get("train", True):
        chosen = ckpt_path
    metrics: dict[str, float] = {}
    with safe_checkpoint_types():
        metrics.update(trainer.validate(model, datamodule=datamodule, ckpt_path=chosen, verbose=False,
                                        weights_only=weights_only)[0])
        if test:
            metrics.update(trainer.test(model, datamodule=datamodule, ckpt_path=chosen, verbose=False,
                                        weights_only=weights_only)[0])
    metrics = {k: v for k, v in to_float_dict(metrics).items() if k.startswith(("val/", "test/"))}
    finalize_loggers(trainer.loggers)
    return metrics, chosen, trainer.is_global_zero


def refit_config(cfg: DictConfig, epochs: int) -> DictConfig:
    """The refit run of ``cfg``: the same config (seed, normalization already resolved) trained on train + val
    for ``epochs`` epochs, written to ``<run dir>/refit``; no best-by-val checkpoint (val is in-sample)."""
    refit = copy.deepcopy(cfg)
    with open_dict(refit):
        refit.paths.output_dir = str(Path(cfg.paths.output_dir) / "refit")
        refit.data.train_on_val = True
        refit.trainer.max_epochs = epochs
        refit.refit = False
        if refit.get("callbacks") is not None and "model_checkpoint" in refit.callbacks:
            refit.callbacks.model_checkpoint = None
    return refit


def refit_and_test(cfg: DictConfig, best: str | None, resume: bool = False) -> dict[str, float]:
    """``refit=true``: train again from the start on train + val for the selected epoch count (the best
    checkpoint's epoch + 1, so the schedule is the selection run's whenever the last epoch won), keep its last
    epoch and return its ``test/*`` metrics (when ``test``). ``<run dir>/refit/checkpoints/last.ckpt`` is the
    final model; ``<run dir>/refit/metrics.json`` holds its in-sample ``val/*`` too. ``resume``: continue a
    stopped refit from its newest checkpoint (last.ckpt, or a requeue's hpc_ckpt_<n>.ckpt)."""
    if best is None:
        raise ConfigError("refit=true needs the best checkpoint of the selection run; keep callbacks.model_checkpoint")
    epochs = int(read_checkpoint(best, trust=trusts_checkpoints(cfg), mmap=True)["epoch"]) + 1
    refit_cfg = refit_config(cfg, epochs)
    output_dir = Path(refit_cfg.paths.output_dir)
    last = output_dir / "checkpoints" / "last.ckpt"
    log.info("refit: %d epochs on train + val (the selected epoch %d of the run), into %s", epochs, epochs - 1, output_dir)
    newest = newest_checkpoint(output_dir, trust=trusts_checkpoints(cfg)) if resume and output_dir.is_dir() else None
    resume_from = str(newest) if newest is not None else None
    metrics, _, is_main = fit_and_evaluate(refit_cfg, resume_from, test=cfg.get("test", True))  # the last epoch
    if is_main:
        write_json(output_dir / "metrics.json", metrics)
        log.info("refit model: %s", last)
    return {k: v for k, v in metrics.items() if k.startswith("test/")}


def objective(cfg: DictConfig) -> float | None:
    """What ``scripts/train.py`` returns to a Hydra sweeper: ``optimized_metric`` of the run when it is set
    (``hparams_search=optuna``), else ``val/acc``. Under ``optimized_metric`` a run whose loss diverged
    (``NonFiniteLossError``, common at the high end of a learning-rate search) is a failed trial: one
    warning line and NaN, which Optuna records as failed and moves on from, instead of ending the study. A run
    stopped for a SLURM requeue (``fgzoom.callbacks.preemption.RunRequeued``) exits with status ``EXIT_REQUEUED`` (3):
    neither finished nor failed; the requeued job continues it."""
    name = cfg.get("optimized_metric")
    try:
        metrics = train(cfg)
    except RunRequeued as stopped:  # state saved for the requeued job, which continues this run
        log.info("%s", stopped)
        raise SystemExit(EXIT_REQUEUED) from None
    except NonFiniteLossError as e:
        if name is None:
            raise
        log.warning("trial failed, reported to the sweeper as NaN: %s", e)
        return float("nan")
    return optimized_value(metrics, name) if name else metrics.get("val/acc")
