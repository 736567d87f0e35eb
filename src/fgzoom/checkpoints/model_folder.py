"""A model folder a user can share: the weights as safetensors, the module's hyperparameters, the run's resolved
config, the class names and a model card, loadable by eval and predict (``ckpt_path=<folder>``) without the run
folder or Lightning's checkpoint format.

Layout::

    <folder>/
      model.safetensors   the FGVCModule's state_dict (the weights eval/predict would load from the checkpoint)
      fgzoom.json         {"format": 1, "hyper_parameters": ..., "class_names": [...], "progress": float,
                           "val_box_tau": [3 floats] or null (MaxBoxAccV2's val-best map thresholds)}
      config.yaml         the run's resolved config (data, model, trainer, seed)
      README.md           the model card: data, recipe, metrics (with the seed) when the run folder has them
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from safetensors.torch import load_file, save_file

from fgzoom.errors import ConfigError
from fgzoom.models.module import FGVCModule

WEIGHTS, META, CONFIG, CARD = "model.safetensors", "fgzoom.json", "config.yaml", "README.md"
FORMAT = 1


def is_model_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_model_folder`."""
    path = Path(str(path)).expanduser()
    return path.is_dir() and (path / WEIGHTS).is_file() and (path / META).is_file()


def _metrics_of_run(checkpoint: Path) -> dict | None:
    """``metrics.json`` of the run a checkpoint belongs to (``<run>/checkpoints/<name>.ckpt``), if there."""
    path = checkpoint.resolve().parent.parent / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def model_card(config: dict, class_names: list[str], metrics: dict | None) -> str:
    """The README.md of a model folder: what it is, how it was trained, what it measured, how to use it."""
    model, data = config.get("model", {}), config.get("data", {})
    zoom = model.get("zoom")
    if not zoom:
        kind = "plain classifier (no zoom)"
    elif zoom.get("crop", True) is False:
        kind = f"attention head and BAP classifier, no crop (model=bap), predicting from the raw branch; {zoom.get('box')} boxes"
    else:
        kind = (f"attention-crop zoom at level={zoom.get('level')}, {zoom.get('box')} boxes, {zoom.get('sampler')} "
                f"sampler, mode={zoom.get('mode')}")
    lines = [
        f"# fgzoom model: {model.get('backbone', {}).get('name')} on {data.get('dataset')}", "",
        f"- model: {kind}",
        f"- classes: {len(class_names)} ({', '.join(class_names[:5])}{', ...' if len(class_names) > 5 else ''})",
        f"- data: `{data.get('dataset')}`, image_size {data.get('image_size')}, crop_pct {data.get('crop_pct')}, "
        f"mean {data.get('mean')}, std {data.get('std')}",
        f"- recipe: optimizer {model.get('optimizer', {}).get('opt')} lr {model.get('optimizer', {}).get('lr')}, "
        f"{config.get('trainer', {}).get('max_epochs')} epochs, batch {data.get('batch_size')}, seed {config.get('seed')}",
        f"- pretrained: {model.get('backbone', {}).get('pretrained_path') or model.get('backbone', {}).get('pretrained')}",
        "",
        "## Metrics",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if isinstance(v, int | float)]
        lines += ["", f"One run, seed {config.get('seed')}; the checkpoint chosen on the validation split."]
    else:
        lines += ["No metrics.json was found next to the checkpoint."]
    lines += ["", "## Use", "", "```bash",
              "python scripts/predict.py ckpt_path=<this folder> input=<image or folder>",
              "python scripts/eval.py ckpt_path=<this folder> data.root=<dataset>", "```", ""]
    return "\n".join(lines)


def save_model_folder(module: FGVCModule, meta: dict, out: Path, checkpoint: Path | None = None) -> Path:
    """Write ``module`` (with the checkpoint's ``fgzoom`` entry ``meta``) as a model folder at ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    hparams = {k: v for k, v in dict(module.hparams).items() if not callable(v)}
    (out / META).write_text(json.dumps(
        {"format": FORMAT, "hyper_parameters": hparams, "class_names": meta.get("class_names"),
         "progress": meta.get("progress", 1.0), "val_box_tau": meta.get("val_box_tau")}, indent=1, default=list))
    config = meta.get("config") or {}
    (out / CONFIG).write_text(yaml.safe_dump(json.loads(json.dumps(config, default=list)), sort_keys=False))
    metrics = _metrics_of_run(checkpoint) if checkpoint is not None else None
    (out / CARD).write_text(model_card(config, list(meta.get("class_names") or []), metrics))
    return out


def read_folder_meta(folder: str | Path) -> dict:
    """The ``fgzoom`` entry a checkpoint would hold (``class_names``, ``config``, ``progress``, ``val_box_tau``) of
    a model folder."""
    folder = Path(str(folder)).expanduser()
    try:
        meta = json.loads((folder / META).read_text())
        config = yaml.safe_load((folder / CONFIG).read_text()) if (folder / CONFIG).is_file() else {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"ckpt_path={folder}: not a readable model folder ({type(e).__name__}: {e})") from e
    if meta.get("format") != FORMAT:
        raise ConfigError(f"ckpt_path={folder}: model folder format {meta.get('format')!r}, this fgzoom reads {FORMAT}")
    return {"class_names": meta.get("class_names"), "config": config, "progress": meta.get("progress", 1.0),
            "val_box_tau": meta.get("val_box_tau"), "hyper_parameters": meta["hyper_parameters"]}


def load_model_folder(folder: str | Path) -> FGVCModule:
    """Rebuild the FGVCModule of a model folder on the CPU (``FGVCModule.from_saved``: no pretrained download,
    the weights are the folder's safetensors)."""
    meta = read_folder_meta(folder)
    try:
        state = load_file(str(Path(str(folder)).expanduser() / WEIGHTS))
    except Exception as e:  # safetensors' own errors (a damaged or foreign file)
        raise ConfigError(f"ckpt_path={folder}: cannot read {WEIGHTS} ({type(e).__name__}: {str(e)[:200]})") from e
    return FGVCModule.from_saved(meta["hyper_parameters"], state, float(meta["progress"]),
                                 source=f"ckpt_path={folder}", val_box_tau=meta["val_box_tau"])


def push_folder(folder: Path, repo: str) -> str:
    """Upload ``folder`` to the Hugging Face Hub repository ``repo``; one ConfigError line when the hub is not
    reachable or refuses."""
    from fgzoom.models.backbone import hub_reachable

    if not hub_reachable():
        raise ConfigError(
            f"push_to_hub=true: the Hugging Face Hub is not reachable from here; the folder {folder} is complete, "
            f"upload it later with `huggingface-cli upload {repo} {folder}`"
        )
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        return str(api.upload_folder(repo_id=repo, folder_path=str(folder)))
    except Exception as e:  # authentication, permissions, network
        raise ConfigError(f"hub_repo={repo}: upload failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          f"the folder {folder} is complete, upload it later with huggingface-cli") from e


def replace_folder(out: Path) -> None:
    """Remove an earlier model folder at ``out`` (only one this module wrote) before writing a new one."""
    if out.exists():
        if not is_model_folder(out):
            raise ConfigError(f"out={out}: exists and is not a model folder; pick another path")
        shutil.rmtree(out)
