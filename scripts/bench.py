"""Benchmarks, each measured against its baseline in the same process.

    python scripts/bench.py crop_resize            # crop_resize vs the per-sample F.interpolate loop
    python scripts/bench.py samplers               # the zoom's samplers (continuous, slice, grid_sample) per mode
    python scripts/bench.py step                   # train step: plain vs zoom (feature: per stage at the
                                                   # defaults, slice sampler, learned boxes, 2 regions; image)
    python scripts/bench.py step --interp          # train step: plain vs every interpolation ablation setting
    python scripts/bench.py baseline --seeds 1,2,3 data=mnist_clutter trainer.max_epochs=10
                                                   # test/acc: the reference loop vs model=plain vs model=zoom
    python scripts/bench.py loader --step-rate 800 # images/s of the train and eval loaders (448 px, uint8) vs a
                                                   # plain torchvision uint8 loader, 500x375 and 1024x683 JPEGs,
                                                   # 0 (in process, one thread), 1, 2 and all cores' workers;
                                                   # the workers that keep up with 800 images/s of training
    python scripts/bench.py loader data.image_size=224 data.crop_pct=1.0   # other data settings

    # the 2-core CPU of the README (add --repeats 7 or more when other work shares the cores)
    python scripts/bench.py step --backbone resnet50 --image-size 160 --batch-size 8 --repeats 7 --stages=-2

    # on a GPU: the fast paths of training (trainer.precision=bf16-mixed, model.channels_last=true, and
    # optionally model.compile=true; the warm-up steps include the compilation)
    python scripts/bench.py step --device cuda --precision bf16 --channels-last \
        --backbone resnet50 --image-size 448 --batch-size 32 --repeats 20 --out bench_gpu.json
    python scripts/bench.py step --device cuda --precision bf16 --channels-last --compile \
        --backbone resnet50 --image-size 448 --batch-size 32 --repeats 20 --out bench_gpu_compile.json
    python scripts/bench.py crop_resize --device cuda

The step benchmark times forward + loss (the default loss terms) + backward + AdamW step of each variant,
interleaved, synchronising the GPU around each step; peak memory is each variant's own footprint, from
the allocator (torch.cuda.max_memory_allocated) on CUDA and, roughly, from the growth of the process's peak
RSS on CPU. Ratios are to the plain model in the same process: compare ratios, or times measured on the
same card in one run. The loader benchmark (``fgzoom.bench.loader_bench``) writes its JPEGs into a temporary
folder and compares the project's loaders with the torchvision reference in the same process; its
``--step-rate`` is the training's images/s (e.g. the ``step`` mode's, at the batch size and card you train).

Prints markdown tables and writes JSON (--out, default bench.json in the current folder): the machine, the
arguments and every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from project_root import ROOT

CROP_SHAPES = [(32, 1024, 14, 14), (32, 512, 28, 28), (16, 3, 448, 448)]
CROP_MODES = ["nearest", "nearest-exact", "bilinear", {"mode": "bilinear", "align_corners": True},
              {"mode": "bilinear", "antialias": True}, "bicubic", "area"]
SAMPLER_MODES = [*CROP_MODES, {"mode": "bicubic", "antialias": True}, {"mode": "lanczos", "antialias": True}]


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["crop_resize", "samplers", "step", "baseline", "loader", "all"], nargs="?",
                        default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=None,
                        help="step: the backbone's view of the batch (model.input_size), e.g. 96 for fine_detail")
    parser.add_argument("--stages", default="-2,-3", help="feature stages to benchmark, comma-separated")
    parser.add_argument("--no-box-variants", action="store_true",
                        help="step: leave out the zoom feature slice / learned / regions=2 / ranked rows")
    parser.add_argument("--interp", action="store_true",
                        help="step: plain and one row per setting of the interpolation ablation "
                        "(experiment=ablate_interp's valid combinations, both levels) instead of the default rows")
    parser.add_argument("--rows", default=None,
                        help="step: only the rows with these names, comma-separated (e.g. 'plain,zoom image')")
    parser.add_argument("--switches", action="store_true",
                        help="step: add the practitioner switches' rows (zoom feature with grad_checkpointing, EMA, mixup+CutMix)")
    parser.add_argument("--precision", choices=["32", "bf16", "16"], default="32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbones (model.compile=true)")
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--seeds", default="1,2,3", help="baseline: seeds, comma-separated")
    parser.add_argument("--models", default="loop,plain,zoom", help="baseline: which of loop, plain, zoom")
    parser.add_argument("--runs-dir", default="logs/baseline", help="baseline: where the train.py runs go")
    parser.add_argument("--loop-lr", type=float, default=2e-3, help="baseline: the loop's peak lr (the recipe's)")
    parser.add_argument("--loop-batch-size", type=int, default=None,
                        help="baseline: the loop's batch size (default: data.batch_size, the recipe's)")
    parser.add_argument("--loop-train-on-val", action=argparse.BooleanOptionalAction, default=True,
                        help="baseline: the loop trains on the validation split too, every training image (default; "
                        "--no-loop-train-on-val holds it out as model=plain does)")
    parser.add_argument("--images", type=int, default=256, help="loader: JPEGs per image size")
    parser.add_argument("--workers", default=None,
                        help="loader: worker counts, comma-separated (default 0, 1, 2 and all cores)")
    parser.add_argument("--step-rate", type=float, default=None,
                        help="loader: training images/s to keep up with (e.g. the step mode's images/s)")
    args, overrides = parser.parse_known_args()
    if args.what not in ("baseline", "loader") and overrides:
        parser.error(f"unrecognized arguments: {' '.join(overrides)} (config overrides go with 'baseline' or 'loader')")

    from fgzoom.bench.crop_resize_bench import (
        bench_crop_resize,
        bench_samplers,
        format_sampler_table,
        format_table,
    )
    from fgzoom.bench.step_bench import bench_train_step, default_variants, format_step_table, interp_variants

    report: dict = {"machine": machine(args.device), "args": vars(args)}
    print(f"machine: {report['machine']}")
    if args.what in ("crop_resize", "all"):
        rows = bench_crop_resize(CROP_SHAPES, CROP_MODES, repeats=args.repeats, device=args.device)
        report["crop_resize"] = rows
        print("\ncrop_resize vs per-sample loop (forward, fp32, median ms)\n" + format_table(rows))
    if args.what in ("samplers", "all"):
        rows = bench_samplers(CROP_SHAPES, SAMPLER_MODES, repeats=args.repeats, device=args.device)
        report["samplers"] = rows
        print("\nthe zoom's samplers on fractional boxes (forward + backward, fp32, median ms)\n"
              + format_sampler_table(rows))
    if args.what in ("step", "all"):
        stages = [int(s) for s in args.stages.split(",") if s]
        if args.interp:
            variants = interp_variants(ROOT / "configs")
        else:
            variants = default_variants(stages, box_variants=not args.no_box_variants, switches=args.switches)
        if args.rows:
            wanted = [name.strip() for name in args.rows.split(",")]
            unknown = sorted(set(wanted) - {v["name"] for v in variants})
            if unknown:
                parser.error(f"--rows: no rows named {unknown}; the rows are {[v['name'] for v in variants]}")
            variants = [v for v in variants if v["name"] in wanted]
        rows = bench_train_step(
            backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size,
            input_size=args.input_size, variants=variants, repeats=args.repeats, device=args.device,
            precision=args.precision, channels_last=args.channels_last, compile=args.compile,
        )
        report["step"] = rows
        extras = "".join(f", {k}" for k in ("channels_last", "compile") if getattr(args, k))
        view = f" (backbone view {args.input_size}px)" if args.input_size else ""
        print(f"\ntrain step, {args.backbone} at {args.image_size}px{view}, batch {args.batch_size}, precision "
              f"{args.precision}{extras}\n" + format_step_table(rows))
    if args.what == "baseline":
        import time

        from fgzoom.bench.baseline import compare, compose_train_config, format_results

        seeds = [int(s) for s in args.seeds.split(",") if s]
        runs = Path(args.runs_dir) / time.strftime("%Y-%m-%d_%H-%M-%S")
        results = compare(
            lambda seed: compose_train_config(ROOT, overrides, seed), ROOT, overrides, seeds, runs,
            models=tuple(args.models.split(",")),
            loop_options=dict(lr=args.loop_lr, batch_size=args.loop_batch_size, device=args.device,
                              train_on_val=args.loop_train_on_val),
        )
        report["baseline"] = {"overrides": overrides, "seeds": seeds, "test_acc": results, "runs": str(runs)}
        print(f"\ntest/acc, {' '.join(overrides) or 'defaults'}\n" + format_results(results, seeds))
    if args.what == "loader":
        import hydra

        from fgzoom.bench.baseline import compose_train_config
        from fgzoom.bench.loader_bench import (
            bench_loaders,
            format_loader_table,
            format_workers_needed,
            worker_counts,
        )

        cores = os.cpu_count() or 1
        workers = [int(w) for w in args.workers.split(",")] if args.workers else worker_counts(cores)
        defaults = ["data=imagefolder", "data.image_size=448", "data.crop_pct=0.875", "data.batch_size=16",
                    "data.pin_memory=false"]

        def make_datamodule(root: Path, n: int, extra: list[str]):
            cfg = compose_train_config(ROOT, [*defaults, *overrides, *extra, f"data.root={root}",
                                              f"data.num_workers={n}"], seed=0)
            return hydra.utils.instantiate(cfg.data, seed=0)

        with tempfile.TemporaryDirectory(prefix="fgzoom_loader_bench_") as tmp:
            rows = bench_loaders(make_datamodule, Path(tmp), count=args.images, workers=workers, repeats=args.repeats)
        report["loader"] = {"overrides": [*defaults, *overrides], "cores": cores, "rows": rows}
        print(f"\nloader images/s, {' '.join([*defaults, *overrides])}, {cores} cores\n" + format_loader_table(rows))
        if args.step_rate:
            print("\n" + format_workers_needed(rows, args.step_rate))
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
