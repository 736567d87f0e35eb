"""The reference loop: the short training loop a practitioner writes first, as the recipe's guard.

``reference_loop`` is deliberately plain (no Lightning, none of the project's recipe code; the project's
datamodule only lists the images and their splits): the timm backbone, AdamW with timm's no-weight-decay rule
(``timm.optim.param_groups_weight_decay``: no decay on biases, norm weights and other 1-d parameters),
torch's one-cycle schedule, cross-entropy, a random shift of up to 1/16 of the side, horizontal flips as the
data config sets them (``data.hflip``), its last epoch tested. It is fair to the recipe where the recipe's
choices are the ones a user would make for the same data: the batch size is the data config's
(``data.batch_size``); with pretrained weights the classifier trains at ``lr * lr_mult_new``
(``model.optimizer.lr_mult_new``; null: 10 with weights, as the recipe); the optimizer, rates, weight decay,
one-cycle schedule (and its cycling of Adam's beta1) are the recipe's. ``compare`` runs it beside
``scripts/train.py model=plain`` and ``model=zoom`` under the same config overrides, epochs and seeds:

    python scripts/bench.py baseline --seeds 1,2,3 data=mnist_clutter trainer.max_epochs=10

What still differs from ``model=plain``, on purpose (a user's first loop) or by simplicity:

- **Data**: the loop trains on every training image, the train split and the validation split the project
  holds out of it (as a user's first loop does; ``train_on_val=False`` holds it out too), and reports its
  last epoch; ``model=plain`` trains on the train split and tests the checkpoint best by ``val/acc`` (the
  whole training split with ``refit=true``). Under ``refit=true`` or ``data.val_on_test=true`` the loop
  trains on the datamodule's train split alone (it already holds the validation images, or the validation
  split is the test split).
- **Augmentation**: the loop shifts by up to 1/16 of the side (zero padding, random crop) after a resize to
  the square; the recipe applies the data config's transforms (``data.translate``, 1/16 in the shipped
  ``synthetic``, ``mnist_clutter`` and ``imagefolder`` configs, or ``data.crop_pct``, colour jitter,
  RandAugment, mixup where set).
- **Normalization**: from scratch the loop normalizes with its own training images' statistics (train + val),
  the recipe with the train split's; with weights both take the backbone's.
- **Details**: the loop decodes with PIL and resizes with torchvision; it runs in fp32 with none of the
  recipe's switches (EMA, channels_last, compile, precision); its random streams are its own.

The project's plain model must not lose to the loop (``tests/test_recipe.py`` holds it to that on a tiny
budget); every accuracy claim of the docs is made against it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from fgzoom.data.dataset import load_rgb
from fgzoom.data.stats import channel_stats

MODELS = ("loop", "plain", "zoom")
LR_MULT_NEW_PRETRAINED = 10.0  # the recipe's lr_mult_new: null with pretrained weights (fgzoom.models.optim)


class _Images(Dataset):
    def __init__(self, samples: list, transform: v2.Transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.samples[i].path)), self.samples[i].label


def loop_training_images(datamodule, train_on_val: bool = True) -> list:
    """The images the loop trains on: the datamodule's train split and (``train_on_val``) its validation split,
    unless the train split already holds it (``data.train_on_val``, a refit) or it is the test split
    (``data.val_on_test``)."""
    datamodule.setup()
    splits = datamodule.splits
    add_val = train_on_val and not datamodule.train_on_val and not datamodule.val_on_test
    return splits["train"] + (splits["val"] if add_val else [])


def optimizer_groups(model: torch.nn.Module, weight_decay: float, lr: float, lr_mult_new: float) -> list[dict]:
    """AdamW's parameter groups: timm's no-weight-decay rule (``param_groups_weight_decay`` with the model's own
    ``no_weight_decay()`` names), each group split into the body at ``lr`` and the classifier
    (``get_classifier()``) at ``lr * lr_mult_new``; empty groups dropped."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    head = {id(p) for p in model.get_classifier().parameters()} if lr_mult_new != 1.0 else set()
    groups = []
    for group in param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip):
        for is_head in (False, True):
            params = [p for p in group["params"] if (id(p) in head) == is_head]
            if params:
                groups.append({**group, "params": params, "lr": lr * (lr_mult_new if is_head else 1.0)})
    return groups


def reference_loop(
    datamodule,
    backbone: str,
    epochs: int,
    seed: int,
    pretrained_path: str | None = None,
    pretrained: bool = False,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    batch_size: int | None = None,
    shift: float = 1 / 16,
    device: str = "cpu",
    train_on_val: bool = True,
    lr_mult_new: float | None = None,
    hflip: float | None = None,
) -> dict[str, float]:
    """Train ``backbone`` on ``datamodule``'s training images (:func:`loop_training_images`) for ``epochs`` and
    return the last epoch's ``test/acc``.

    Weights: ``pretrained_path`` (a file, as ``model.backbone.pretrained_path``) or ``pretrained`` (timm's
    hub weights, ``model.backbone.pretrained``); else from scratch. ``batch_size`` None: the datamodule's
    (``data.batch_size``). ``lr_mult_new`` None: 10 with weights, else 1 (the recipe's rule). ``hflip`` None:
    the datamodule's flip probability (``data.hflip``)."""
    torch.manual_seed(seed)
    train = loop_training_images(datamodule, train_on_val)
    test, size = datamodule.splits["test"], datamodule.image_size
    batch_size = datamodule.batch_size if batch_size is None else batch_size
    pretrained = bool(pretrained or pretrained_path)
    if lr_mult_new is None:
        lr_mult_new = LR_MULT_NEW_PRETRAINED if pretrained else 1.0
    hflip = float(datamodule.transform_args["hflip"]) if hflip is None else hflip
    if pretrained:
        config = timm.get_pretrained_cfg(backbone)
        mean, std = list(config.mean), list(config.std)
    else:
        mean, std = channel_stats(train, size, workers=max(1, datamodule.num_workers))
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    flip = [v2.RandomHorizontalFlip(hflip)] if hflip > 0 else []
    train_tf = v2.Compose([v2.Resize((size, size)), v2.RandomCrop(size, padding=round(shift * size)), *flip, *tail])
    test_tf = v2.Compose([v2.Resize((size, size)), *tail])
    workers = datamodule.num_workers
    train_loader = DataLoader(_Images(train, train_tf), batch_size, shuffle=True, num_workers=workers,
                              generator=torch.Generator().manual_seed(seed))
    test_loader = DataLoader(_Images(test, test_tf), 2 * batch_size, num_workers=workers)

    options = dict(pretrained=True) if pretrained else {}
    if pretrained_path:
        options["pretrained_cfg_overlay"] = dict(file=pretrained_path)
    model = timm.create_model(backbone, num_classes=datamodule.num_classes, **options).to(device)
    groups = optimizer_groups(model, weight_decay, lr, lr_mult_new)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, [g["lr"] for g in groups],
                                                   total_steps=epochs * len(train_loader))
    for _ in range(epochs):
        model.train()
        for images, labels in train_loader:
            loss = F.cross_entropy(model(images.to(device)), labels.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in test_loader:
            correct += (model(images.to(device)).argmax(1).cpu() == labels).sum().item()
    return {"test/acc": correct / len(test)}


def _train_script(root: Path, model: str, seed: int, overrides: list[str], run_dir: Path) -> dict[str, float]:
    """``scripts/train.py model=<model> seed=<seed> <overrides>`` in a subprocess; its metrics.json."""
    command = [sys.executable, str(root / "scripts" / "train.py"), f"model={model}", f"seed={seed}", *overrides,
               f"hydra.run.dir={run_dir}", "callbacks.rich_progress_bar=null", "figures_every_n_epochs=0"]
    subprocess.run(command, check=True)
    return json.loads((run_dir / "metrics.json").read_text())


def compare(
    cfg_for_seed,
    root: Path,
    overrides: list[str],
    seeds: list[int],
    out_dir: Path,
    models: tuple[str, ...] = MODELS,
    loop_options: dict | None = None,
) -> dict[str, list[float]]:
    """test/acc per model and seed: the reference loop in this process, the project's models as
    ``scripts/train.py`` runs in ``out_dir/<model>_seed<seed>``. ``cfg_for_seed(seed)`` composes the train
    config (with ``overrides``) the loop reads its dataset, backbone and epochs from."""
    results: dict[str, list[float]] = {m: [] for m in models}
    for seed in seeds:
        for model in models:
            if model == "loop":
                import hydra

                cfg = cfg_for_seed(seed)
                datamodule = hydra.utils.instantiate(cfg.data, seed=seed)
                datamodule.prepare_data()
                options = {"lr_mult_new": cfg.model.get("optimizer", {}).get("lr_mult_new"), **(loop_options or {})}
                metrics = reference_loop(
                    datamodule, cfg.model.backbone.name, int(cfg.trainer.max_epochs), seed,
                    pretrained_path=cfg.model.backbone.get("pretrained_path"),
                    pretrained=bool(cfg.model.backbone.get("pretrained")), **options,
                )
            else:
                metrics = _train_script(root, model, seed, overrides, out_dir / f"{model}_seed{seed}")
            results[model].append(float(metrics["test/acc"]))
            print(f"seed {seed} {model}: test/acc {results[model][-1]:.4f}", flush=True)
    return results


def compose_train_config(root: Path, overrides: list[str], seed: int):
    """``configs/train.yaml`` with ``overrides`` and ``seed``, composed as scripts/train.py composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(root / "configs"), version_base="1.3"):
        cfg = compose(config_name="train.yaml", overrides=[*overrides, f"seed={seed}"], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


def format_results(results: dict[str, list[float]], seeds: list[int]) -> str:
    """Markdown table: one row per model, test/acc per seed and mean ± sample std."""
    lines = ["| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---|" + "---:|" * (len(seeds) + 1)]
    for model, accs in results.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        cells = " | ".join(f"{a:.3f}" for a in accs)
        lines.append(f"| {model} | {cells} | {statistics.mean(accs):.3f} ± {spread:.3f} |")
    return "\n".join(lines)
