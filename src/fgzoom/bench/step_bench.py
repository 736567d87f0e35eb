"""Train-step cost of the plain model vs the zoom model, measured in one process.

Each variant is an FGVCModule built from the same backbone config with its default loss terms; a step is
forward + loss + backward + optimizer step on one random batch, under autocast when a precision is given
(and with a gradient scaler for fp16, as Lightning's ``16-mixed`` does). Variants are timed interleaved,
repeat by repeat, so machine noise hits all of them alike; the table reports medians and the ratio to the
plain step. On CUDA the device is synchronised around every timed step.
"""

from __future__ import annotations

import ctypes
import itertools
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from fgzoom.callbacks.ema import ema_multi_avg_fn
from fgzoom.data.mixing import BatchMixing, MixupConfig
from fgzoom.models.module import FGVCModule
from fgzoom.ops.interpolation import check_interpolation
from fgzoom.sweeps.expand import expand_sweep
from fgzoom.sweeps.step_cost import bench_name


def _peak_rss_reset() -> None:
    """Hand freed heap memory back to the OS (glibc) and reset the kernel's peak-RSS counter of this
    process (Linux), so that the next peak counts what is allocated after this call; no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _status_mib(key: str) -> float | None:
    """``VmHWM`` (peak RSS) or ``VmRSS`` of this process in MiB (Linux); None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


BOX_VARIANTS: list[dict[str, Any]] = [
    # the stage rows run the defaults (continuous sampler, moments boxes); this is the exact whole-cell crop
    {"name": "zoom feature slice", "zoom": {"level": "feature", "sampler": "slice", "box": "threshold"}},
    {"name": "zoom feature grid_sample", "zoom": {"level": "feature", "sampler": "grid_sample"}},
    {"name": "zoom feature learned", "zoom": {"level": "feature", "sampler": "continuous", "box": "learned"}},
    {"name": "zoom feature regions=2", "zoom": {"level": "feature", "num_regions": 2}},
    {"name": "zoom feature ranked", "zoom": {"level": "feature", "box": "ranked"}},
]


SWITCH_VARIANTS: list[dict[str, Any]] = [
    # the practitioner switches at the zoom defaults; "module" holds further FGVCModule arguments, "ema" the
    # decay of an EMA updated after every step (as fgzoom.callbacks.ema.EMA does), "mixup" data.mixup options
    {"name": "zoom feature grad_checkpointing", "zoom": {"level": "feature"}, "module": {"grad_checkpointing": True}},
    {"name": "zoom feature ema", "zoom": {"level": "feature"}, "ema": 0.999},
    {"name": "zoom feature mixup+cutmix", "zoom": {"level": "feature"},
     "mixup": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}},
]


def default_variants(stages: Sequence[int] = (-2,), box_variants: bool = True,
                     switches: bool = False) -> list[dict[str, Any]]:
    """plain, zoom at level=feature for each stage (the zoom defaults: continuous sampler, moments boxes), then
    (``box_variants``) level=feature at the default stage with the slice sampler (threshold boxes), with
    learned boxes, with 2 regions and with ranked boxes, then level=image (and, with ``box_variants``, its
    two-step recursion)."""
    variants: list[dict[str, Any]] = [{"name": "plain", "zoom": None}]
    for stage in stages:
        variants.append({"name": f"zoom feature stage={stage}", "zoom": {"level": "feature", "stage": stage}})
    if box_variants:
        variants += [{"name": v["name"], "zoom": dict(v["zoom"])} for v in BOX_VARIANTS]
    if switches:
        variants += [{**v, "zoom": dict(v["zoom"])} for v in SWITCH_VARIANTS]
    variants.append({"name": "zoom image", "zoom": {"level": "image"}})
    if box_variants:
        variants.append({"name": "zoom image grid_sample", "zoom": {"level": "image", "sampler": "grid_sample"}})
    if box_variants:  # the recursive zoom: a third backbone pass and the attention head on the first view
        variants.append({"name": "zoom image steps=2", "zoom": {"level": "image", "steps": 2}})
    return variants


def interp_variants(config_dir: Path | str, experiment: str = "ablate_interp") -> list[dict[str, Any]]:
    """plain, then one zoom variant per setting of the interpolation ablation, in its sweep order: the
    ``zoom`` section of ``configs/model/zoom.yaml`` with each combination of the experiment's swept
    ``model.zoom.*`` keys over it (seeds dropped; combinations ``check_interpolation`` refuses skipped, as the
    sweep's config check skips them). The backbone is the bench's."""
    import yaml
    from omegaconf import OmegaConf

    config_dir = Path(config_dir)
    params = OmegaConf.to_container(OmegaConf.load(config_dir / "experiment" / f"{experiment}.yaml").hydra.sweeper.params)
    swept = {k: str(v) for k, v in params.items() if k.startswith("model.zoom.")}
    defaults = OmegaConf.to_container(OmegaConf.load(config_dir / "model" / "zoom.yaml").zoom)
    defaults = {k: v for k, v in defaults.items() if not k.startswith("_")}
    variants: list[dict[str, Any]] = [{"name": "plain", "zoom": None}]
    for job in expand_sweep(swept, []):
        zoom = dict(defaults)
        for override in job:
            key, value = override.split("=", 1)
            zoom[key.removeprefix("model.zoom.")] = yaml.safe_load(value)
        try:
            check_interpolation(zoom["mode"], zoom["align_corners"], zoom["antialias"])
        except ValueError:
            continue
        variants.append({"name": bench_name({"model": "zoom", **zoom}), "zoom": zoom})
    return variants


def bench_train_step(
    backbone: str = "resnet50",
    image_size: int = 224,
    batch_size: int = 16,
    variants: Sequence[dict[str, Any]] | None = None,
    input_size: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    device: str = "cpu",
    precision: str = "32",
    channels_last: bool = False,
    compile: bool = False,
    num_classes: int = 200,
) -> list[dict[str, Any]]:
    """Median train-step time, images/s and peak memory of each variant (same backbone and batch).

    Args:
        input_size: the backbone's view of the ``image_size`` batch (``model.input_size``; None: the batch's
            own size), e.g. 96 for ``experiment=fine_detail``'s 192 px batch.
        device: ``cpu`` or ``cuda`` (or ``cuda:N``).
        precision: ``32``, ``bf16`` or ``16`` (autocast on the device; ``16`` adds a gradient scaler).
        channels_last: run models and inputs in channels_last.
        compile: ``torch.compile`` the backbones as ``model.compile=true`` does (compiled in the warm-up).

    Returns:
        One dict per variant: ``name``, ``step_ms``, ``images_per_s``, ``ratio`` (to the first variant),
        ``peak_mem_mib``: the variant's own footprint (weights, gradients, optimizer state, activations) as
        the peak above what was in use before it was built; on CUDA from the allocator
        (``torch.cuda.max_memory_allocated``), on CPU from the process peak RSS (rougher: the allocator may
        reuse memory freed by earlier variants).
    """
    device_t = torch.device(device)
    if device_t.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available on this machine")
    variants = list(variants or default_variants())
    autocast_dtype = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[precision]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=g).to(device_t)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device_t)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cuda = device_t.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device_t)) if cuda else (lambda: None)

    batch = {"image": x, "label": y, "index": torch.arange(batch_size)}
    mixing_seeds = itertools.count(1)  # a new mix every step

    def step(module: FGVCModule, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
             ema: AveragedModel | None = None, mixing: BatchMixing | None = None) -> None:
        data = mixing(batch, seed=next(mixing_seeds)) if mixing is not None else batch
        with torch.autocast(device_t.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = module.criterion(module(data["image"]), data["label"], data.get("target"))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update_parameters(module)

    built = []
    peaks: dict[str, float | None] = {}
    for v in variants:  # build, warm up and measure memory one variant at a time
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device_t)
            mem_base = torch.cuda.memory_allocated(device_t)
        else:
            _peak_rss_reset()
            mem_base = _status_mib("VmRSS")
        torch.manual_seed(0)
        module = FGVCModule(
            backbone={"name": backbone, "img_size": input_size or image_size}, num_classes=num_classes,
            zoom=v["zoom"], input_size=input_size, channels_last=channels_last, compile=compile, **v.get("module", {}),
        ).to(device_t)
        module.configure_model()  # compiles when compile=True, as the Trainer would
        module.train()
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device_t.type, enabled=precision == "16")
        extras = {
            "ema": AveragedModel(module, use_buffers=True, multi_avg_fn=ema_multi_avg_fn(v["ema"])) if "ema" in v else None,
            "mixing": BatchMixing(MixupConfig(**v["mixup"]), num_classes) if "mixup" in v else None,
        }
        for _ in range(warmup):
            step(module, optimizer, scaler, **extras)
        sync()
        if cuda:
            peaks[v["name"]] = (torch.cuda.max_memory_allocated(device_t) - mem_base) / 2**20
        else:
            peak = _status_mib("VmHWM")
            peaks[v["name"]] = peak - mem_base if peak is not None and mem_base is not None else None
        built.append((v["name"], module, optimizer, scaler, extras))

    times: dict[str, list[float]] = {name: [] for name, *_ in built}
    for _ in range(repeats):
        for name, module, optimizer, scaler, extras in built:
            sync()
            t0 = time.perf_counter()
            step(module, optimizer, scaler, **extras)
            sync()
            times[name].append((time.perf_counter() - t0) * 1e3)
    base = statistics.median(times[built[0][0]])
    rows = []
    for name, *_ in built:
        ms = statistics.median(times[name])
        rows.append(
            {
                "name": name,
                "step_ms": ms,
                "images_per_s": batch_size / ms * 1e3,
                "ratio": ms / base,
                "peak_mem_mib": peaks[name],
            }
        )
    return rows


def format_step_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| variant | step ms | images/s | x plain | peak memory MiB |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        mem = f"{r['peak_mem_mib']:.0f}" if r["peak_mem_mib"] is not None else "-"
        lines.append(
            f"| {r['name']} | {r['step_ms']:.1f} | {r['images_per_s']:.1f} | {r['ratio']:.2f} | {mem} |"
        )
    return "\n".join(lines)
