"""What train, eval and predict share: config checks, instantiation helpers, outputs, one-line errors."""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning import Callback
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import MissingMandatoryValue

from fgzoom.checkpoints.io import atomic_write
from fgzoom.checkpoints.model_folder import is_model_folder
from fgzoom.cli.cluster import register_resolvers
from fgzoom.data.readers import GENERATED
from fgzoom.errors import ConfigError, FGZoomError, InvalidSettingError
from fgzoom.models.backbone import BackboneConfig, backbone_normalization, check_pretrained_available
from fgzoom.models.loss import FGVCLoss
from fgzoom.models.options import config_from
from fgzoom.models.zoom_config import ZoomConfig
from fgzoom.sweeps.runs import INVALID_MARKER

log = logging.getLogger("fgzoom")
register_resolvers()  # ${fgzoom.run_name:...} of configs/hydra/default.yaml, before any script composes its config


def validate_config(cfg: DictConfig) -> None:
    """Check the keys that can be checked before any data or model is built (cheap, no I/O beyond stat)."""
    try:
        model = OmegaConf.to_container(cfg.model, resolve=True) if "model" in cfg and cfg.model else {}
        data = OmegaConf.to_container(cfg.data, resolve=True) if "data" in cfg and cfg.data else {}
    except MissingMandatoryValue as e:
        key = e.full_key or str(e)
        raise ConfigError(f"{key} is required: pass {key}=... on the command line") from e
    if model:  # the typed configs check their values; the split checks model.zoom.stage when it is built
        check_pretrained_available(config_from(BackboneConfig, model.get("backbone") or {}, "model.backbone"))
        if model.get("zoom") is not None:
            config_from(ZoomConfig, model["zoom"], "model.zoom")
        FGVCLoss(model.get("loss"), num_classes=1)
    if data and data.get("dataset") not in GENERATED:
        root = data.get("root")
        if root is None:
            raise ConfigError(f"data.root is not set for data={data.get('dataset')}: pass data.root=/path/to/dataset")
        if not Path(str(root)).expanduser().exists():
            raise ConfigError(
                f"data.root={root}: folder not found; pass data.root=/path/to/{data.get('dataset')} (see data/README.md)"
            )


def resolved_container(cfg: DictConfig) -> dict:
    """The resolved run config as plain Python (without the ``hydra`` node), as saved in checkpoints."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """``last`` -> ``<output_dir>/checkpoints/last.ckpt``; any path must exist (a checkpoint file, or a model
    folder of ``scripts/save_model.py``)."""
    if ckpt_path is None:
        return None
    path = Path(output_dir) / "checkpoints" / "last.ckpt" if str(ckpt_path) == "last" else Path(str(ckpt_path))
    if not path.is_file() and not is_model_folder(path):
        hint = " (ckpt_path=last looks in this run folder; set hydra.run.dir to the run to resume)" if ckpt_path == "last" else ""
        raise ConfigError(f"ckpt_path={ckpt_path}: checkpoint file {path} not found{hint}")
    return str(path)


def pin_run_dir(output_dir: str) -> None:
    """Make ``hydra.run.dir`` the literal folder of this run.

    Under ``strategy=ddp`` Lightning starts ranks 1.. by re-running the script with
    ``hydra.run.dir=<HydraConfig run.dir>``; left as ``...${now:...}`` it would resolve again, a second
    later, into a second run folder. Pinned, every rank writes into the one folder of rank 0.
    """
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        with read_write(hydra_cfg), open_dict(hydra_cfg):
            hydra_cfg.run.dir = str(output_dir)


def fill_normalization(cfg: DictConfig) -> None:
    """Fill ``data.mean``/``data.std`` when null: the backbone's timm pretrained values when weights are
    loaded (``model.backbone.pretrained`` or ``pretrained_path``), else ``auto`` (the data's own statistics,
    computed by the datamodule; see :func:`record_normalization`)."""
    if cfg.data.get("mean") is not None and cfg.data.get("std") is not None:
        return
    backbone = cfg.model.backbone
    if backbone.get("pretrained") or backbone.get("pretrained_path"):
        mean, std = (list(v) for v in backbone_normalization(backbone.name))
    else:
        mean = std = "auto"
    with open_dict(cfg):
        if cfg.data.get("mean") is None:
            cfg.data.mean = mean
        if cfg.data.get("std") is None:
            cfg.data.std = std


def record_normalization(cfg: DictConfig, datamodule) -> None:
    """Resolve ``auto`` normalization on the datamodule and write the numbers into ``cfg.data``, so the
    saved config (and with it eval and predict) uses exactly what training used."""
    mean, std = datamodule.resolve_normalization()
    with open_dict(cfg):
        cfg.data.mean, cfg.data.std = list(mean), list(std)


def instantiate_callbacks(cfg: DictConfig | None, has_logger: bool) -> list[Callback]:
    callbacks: list[Callback] = []
    for name, conf in (cfg or {}).items():
        if conf is None or "_target_" not in conf:
            continue
        if name == "lr_monitor" and not has_logger:
            continue  # LearningRateMonitor needs a logger
        callbacks.append(hydra.utils.instantiate(conf))
    return callbacks


# the extra that installs what each optional Lightning logger needs (pyproject.toml)
LOGGER_EXTRAS = {TensorBoardLogger: "tensorboard", MLFlowLogger: "mlflow", WandbLogger: "wandb"}


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """The loggers of ``cfg`` (the ``logger`` group: name -> config with ``_target_``). A logger whose package is
    not installed is one ConfigError line naming the extra to install."""
    loggers = []
    for name, conf in (cfg or {}).items():
        if conf is None or "_target_" not in conf:
            continue
        try:
            loggers.append(hydra.utils.instantiate(conf))
        except Exception as e:
            extra = _missing_extra(conf._target_, e)
            if extra is None:
                raise
            raise ConfigError(f"logger={name} needs {extra}: pip install -e '.[{extra}]'") from e
    return loggers


def _missing_extra(target: str, error: BaseException) -> str | None:
    """The extra of ``LOGGER_EXTRAS`` for logger class ``target`` when ``error`` is (or wraps) a
    ModuleNotFoundError, else None."""
    while error is not None and not isinstance(error, ModuleNotFoundError):
        error = error.__cause__
    if error is None:
        return None
    try:
        cls = hydra.utils.get_class(target)
    except Exception:
        return None
    return next((extra for base, extra in LOGGER_EXTRAS.items() if issubclass(cls, base)), None)


def to_float_dict(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        value = float(value.item() if hasattr(value, "item") else value)
        out[key] = value if math.isfinite(value) else None
    return out


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (see :func:`~fgzoom.checkpoints.io.atomic_write`)."""
    with atomic_write(path) as f:
        f.write((json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def _fgzoom_cause(error: BaseException) -> FGZoomError | None:
    """``error`` or the FGZoomError it wraps (hydra.utils.instantiate re-raises constructor errors as
    InstantiationException with the original as ``__cause__``)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, FGZoomError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def one_line_errors(fn: Callable) -> Callable:
    """Run ``fn``; an FGZoomError (also when re-raised from a DataLoader worker) becomes one line on
    stderr and exit status 2 instead of a traceback.

    In a job of a multirun (``-m``), an InvalidSettingError (a setting the sweep's product of keys makes invalid, e.g.
    ``align_corners=true`` with ``mode=nearest``) is that one line and ``<job dir>/invalid.txt`` holding it, and
    the job returns NaN instead of exiting: the other jobs of the sweep run on, a sweeper records a failed
    trial, and ``scripts/summarize.py`` lists the job as an invalid setting."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as raised:
            e = _fgzoom_cause(raised)
            if e is None:
                raise
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            message = lines[-1] if lines else type(e).__name__
            # a worker's re-raised message ends with "package.Class: message"
            if ": " in message and message.split(": ", 1)[0].rsplit(".", 1)[-1] == type(e).__name__:
                message = message.split(": ", 1)[1]
            print(f"error: {message}", file=sys.stderr)
            job_dir = _multirun_job_dir() if isinstance(e, InvalidSettingError) else None
            if job_dir is not None:
                (job_dir / INVALID_MARKER).write_text(message + "\n")
                return float("nan")
            sys.exit(2)

    return wrapper


def _multirun_job_dir() -> Path | None:
    """The output folder of this multirun job; None outside a multirun."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().runtime.output_dir)

