"""Entry of ``scripts/save_model.py``: a checkpoint -> a shareable model folder (:mod:`fgzoom.checkpoints.model_folder`),
then the optional Hugging Face Hub upload."""

from __future__ import annotations

from pathlib import Path

from fgzoom.checkpoints.io import load_model, read_checkpoint_meta, trusts_checkpoints
from fgzoom.checkpoints.model_folder import push_folder, replace_folder, save_model_folder
from fgzoom.errors import ConfigError


def save_model(cfg) -> Path:
    """Entry of ``scripts/save_model.py``: ``ckpt_path`` -> a model folder at ``out`` (default: ``model/`` in the
    checkpoint's run folder), then the hub upload when ``push_to_hub`` is set."""
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: file not found; pass a checkpoint of a run, e.g. "
                          "<run>/checkpoints/last.ckpt")
    out = Path(str(cfg.out)).expanduser() if cfg.get("out") else ckpt.resolve().parent.parent / "model"
    if cfg.get("push_to_hub") and not cfg.get("hub_repo"):
        raise ConfigError("push_to_hub=true: set hub_repo=<user>/<name>, the Hub repository to upload to")
    trust = trusts_checkpoints(cfg)
    meta = read_checkpoint_meta(str(ckpt), trust)
    module = load_model(str(ckpt), trust)
    replace_folder(out)
    save_model_folder(module, meta, out, checkpoint=ckpt)
    print(out)
    if cfg.get("push_to_hub"):
        print(push_folder(out, str(cfg.hub_repo)))
    return out
