"""The reference loop: the short training loop a practitioner writes first, as the recipe's guard.

``reference_loop`` is deliberately plain (no Lightning, none of the project's recipe code): the timm
backbone, AdamW, one-cycle, cross-entropy, the data's own mean/std (the model's when fine-tuning), a
random shift of up to 1/16 of the side, no flips, the datamodule's train split (the images the project's
models train on; the validation split is not used) and its test split. ``compare`` runs it beside ``scripts/train.py
model=plain`` and ``model=zoom`` under the same config overrides, epochs and seeds:

    python scripts/bench.py baseline --seeds 1,2,3 data=mnist_clutter trainer.max_epochs=10

The project's plain model must not lose to the loop; every accuracy claim of the docs is made
against it.
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
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from fgzoom.data.dataset import load_rgb
from fgzoom.data.stats import channel_stats

MODELS = ("loop", "plain", "zoom")


class _Images(Dataset):
    def __init__(self, samples: list, transform: v2.Transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.samples[i].path)), self.samples[i].label


def reference_loop(
    datamodule,
    backbone: str,
    epochs: int,
    seed: int,
    pretrained_path: str | None = None,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    batch_size: int = 64,
    shift: float = 1 / 16,
    device: str = "cpu",
    train_on_val: bool = False,
) -> dict[str, float]:
    """Train ``backbone`` on ``datamodule``'s train split (``train_on_val``: and its validation split, i.e.
    every training image when the validation split is held out of train) for ``epochs``; return its
    ``test/acc``."""
    torch.manual_seed(seed)
    datamodule.setup()
    splits, size = datamodule.splits, datamodule.image_size
    train = splits["train"] + (splits["val"] if train_on_val else [])
    if pretrained_path:
        config = timm.get_pretrained_cfg(backbone)
        mean, std = list(config.mean), list(config.std)
    else:
        mean, std = channel_stats(train, size, workers=max(1, datamodule.num_workers))
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    train_tf = v2.Compose([v2.Resize((size, size)), v2.RandomCrop(size, padding=round(shift * size)), *tail])
    test_tf = v2.Compose([v2.Resize((size, size)), *tail])
    workers = datamodule.num_workers
    train_loader = DataLoader(_Images(train, train_tf), batch_size, shuffle=True, num_workers=workers,
                              generator=torch.Generator().manual_seed(seed))
    test_loader = DataLoader(_Images(splits["test"], test_tf), 2 * batch_size, num_workers=workers)

    options = dict(pretrained=True, pretrained_cfg_overlay=dict(file=pretrained_path)) if pretrained_path else {}
    model = timm.create_model(backbone, num_classes=datamodule.num_classes, **options).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * len(train_loader))
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
    return {"test/acc": correct / len(splits["test"])}


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
                metrics = reference_loop(
                    datamodule, cfg.model.backbone.name, int(cfg.trainer.max_epochs), seed,
                    pretrained_path=cfg.model.backbone.get("pretrained_path"), **(loop_options or {}),
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
