"""Export entry: a checkpoint's whole network (zoom model: attention, boxes, crop and fusion included) as one
ONNX or TorchScript file that maps a normalized image batch to the prediction logits.

    python scripts/export.py ckpt_path=<run>/checkpoints/last.ckpt format=onnx        # or format=torchscript

``ckpt_path`` may also be a model folder of ``scripts/save_model.py``.

The exported graph takes ``image`` float32 Tensor[B, 3, S, S] (S = the checkpoint's ``data.image_size``; the
image after the eval transform: resized, centre-cropped, scaled to [0, 1] and normalized by ``mean``/``std``)
and returns ``logits`` float32 Tensor[B, K]: ``out["logits"]`` of the network in eval mode (for the zoom model
the fused log-probabilities, argmax = class). The batch dimension B is dynamic.

Both formats go through one ``torch.export.export`` of the network (non-strict, batch as a symbolic ``Dim``):

* ``onnx``: ``torch.onnx.export`` of that program (the dynamo exporter; needs ``onnx`` and ``onnxscript``).
  The older TorchScript-based exporter (``dynamo=False``) cannot trace the zoom model: under ``jit.trace`` the
  tensor sizes are 0-dim tensors, which the box code rejects (measured with torch 2.14.1).
* ``torchscript``: the same program's ATen graph, compiled with ``torch.jit.script`` (``torch.jit.trace``
  fails as above; scripting the eager network fails on its Python-only code). Load with ``torch.jit.load``.

What exports (measured with torch 2.14.1, onnxscript 0.7.2, onnxruntime 1.32; batch 3 against PyTorch, max abs
logit error <= 2.4e-7 for ONNX, 0 for TorchScript): the plain model; zoom at level=feature and level=image;
box=moments, threshold, glimpse, learned, ranked; num_regions=2; attention=head, channel_sum and cls (DeiT);
fusion mean_prob and mean_logit; sampler=continuous (the default; bilinear, bicubic with antialias, area and nearest
tested) and grid_sample with mode nearest, bilinear, bicubic and align_corners=true;
model.zoom.size; model.input_size; channels_last; ResNet, DeiT and Swin backbones; a checkpoint trained with
``model.compile=true`` (loading it does not compile; even a compiled backbone exports). What does not
(``UNSUPPORTED``, refused with one ConfigError line before exporting): ``model.zoom.sampler=slice`` (both
formats) and ``model.zoom.box=mass`` (ONNX only).

Beside the file, ``<stem>.json`` holds what a user needs to run it: the input and output names and shapes,
``image_size``, ``crop_pct``, ``resize_mode``, ``mean``, ``std`` (the eval transform of ``scripts/predict.py``)
and ``class_names``. With ``verify=true`` (the default) the exported file is run on a random batch of another
batch size and compared with PyTorch (ONNX through onnxruntime when it is installed); the largest absolute
difference goes into the log and the JSON.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from fgzoom.checkpoints.io import load_model, read_checkpoint_meta, saved_transform_config, trusts_checkpoints
from fgzoom.cli.predict import eval_transform_args
from fgzoom.cli.runtime import resolve_ckpt_path
from fgzoom.errors import ConfigError, FGZoomError
from fgzoom.models.module import FGVCModule

log = logging.getLogger("fgzoom.cli.export")

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAME, OUTPUT_NAME = "image", "logits"
ONNX_MAX_INLINE_BYTES = 1_800_000_000  # protobuf's 2 GB limit: larger models keep their weights in <file>.data
VERIFY_TOLERANCE = 1e-3  # a larger difference between the exported file and PyTorch fails the export

# Options that do not export, by measurement (torch 2.14.1, onnxscript 0.7.2, onnxruntime 1.32):
# (key, value, format or None for both) -> (why, what to do instead). Everything else in model.zoom exported and
# matched PyTorch (tests/test_export.py, src/fgzoom/cli/export.py's module docstring).
UNSUPPORTED: dict[tuple[str, object, str | None], tuple[str, str]] = {
    ("model.zoom.sampler", "slice", None): (
        "crop_resize reads the box values to pick crop sizes and kernels, which torch.export cannot trace "
        "with a dynamic batch",
        "retrain with model.zoom.sampler=continuous (the default) or grid_sample",
    ),
    ("model.zoom.box", "mass", "onnx"): (
        "the mass rule's torch.searchsorted has no ONNX operator",
        "use format=torchscript, or retrain with model.zoom.box=moments or threshold",
    ),
}


class LogitsModel(nn.Module):
    """``net(image)["logits"]``: the network as one Tensor -> Tensor function (export it in eval mode)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)["logits"]


def _check_exportable(model: FGVCModule, fmt: str) -> None:
    """Raise one ConfigError line for a model option listed in ``UNSUPPORTED`` for ``fmt``."""
    options = {f"model.zoom.{k}": v for k, v in (model.hparams.zoom or {}).items()}
    for (key, value, where), (reason, fix) in UNSUPPORTED.items():
        if (where is None or where == fmt) and key in options and options[key] == value:
            raise ConfigError(f"{key}={value}: cannot be exported to format={fmt} ({reason}); {fix}")


def export_program(module: nn.Module, example: Tensor) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``module`` (eval mode) on ``example`` with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(module, (example,), dynamic_shapes={INPUT_NAME: {0: batch}}, strict=False)


def write_onnx(program: torch.export.ExportedProgram, path: Path, opset: int) -> list[Path]:
    """Write ``program`` as ONNX to ``path`` (weights inline up to ~1.8 GB, else in ``<path>.data``); returns
    the files written."""
    size = sum(t.numel() * t.element_size() for t in program.state_dict.values())
    external = size > ONNX_MAX_INLINE_BYTES
    quiet = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]  # one INFO line per optimization
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program, f=None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                dynamo=True, verbose=False, optimize=True,
            )
            onnx_program.save(str(path), external_data=external)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    return [path, path.with_name(path.name + ".data")] if external else [path]


def _size(x: Tensor, dim: int) -> int:
    """``aten.sym_size.int`` as TorchScript can compile it (the symbolic batch size)."""
    return x.size(dim)


def _scriptable(program: torch.export.ExportedProgram) -> torch.fx.GraphModule:
    """The program as a plain ``fx.GraphModule`` that ``torch.jit.script`` compiles: positional input and a
    single Tensor output (no pytree code), no shape guards or metadata asserts, ``aten.sym_size`` as
    ``Tensor.size`` and ATen overloads as their packets (TorchScript picks the overload by schema)."""
    module = program.module()
    graph = module.graph
    graph._codegen = torch.fx.graph.CodeGen()
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn" and not node.users:
            graph.erase_node(node)
        elif node.op == "call_function" and not node.users and "assert" in str(node.target):
            graph.erase_node(node)
        elif node.op == "call_function" and node.target is torch.ops.aten.sym_size.int:
            node.target = _size
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            node.target = node.target.overloadpacket
    output = graph.output_node()
    if isinstance(output.args[0], (tuple, list)) and len(output.args[0]) == 1:
        output.args = (output.args[0][0],)
    plain = torch.fx.GraphModule(module, graph)
    plain.delete_all_unused_submodules()
    plain.recompile()
    return plain


def write_torchscript(program: torch.export.ExportedProgram, path: Path) -> list[Path]:
    """Write ``program`` as a scripted TorchScript module to ``path``; returns the files written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(_scriptable(program))
    scripted.save(str(path))
    return [path]


def run_exported(path: Path, fmt: str, images: Tensor) -> Tensor | None:
    """Run the exported file on ``images``; None for ONNX when onnxruntime is not installed."""
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path), map_location="cpu")(images)
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def export_model(model: FGVCModule, path: Path, fmt: str, image_size: int, batch_size: int = 2,
                 opset: int = 18, verify: bool = True) -> dict:
    """Export ``model.net`` (eval mode, CPU) to ``path`` in ``fmt``, tracing a random batch of ``batch_size``
    ``image_size`` x ``image_size`` images. Returns ``files`` (written) and ``max_abs_error`` (of a batch of
    ``batch_size + 1`` against PyTorch; None when not verified)."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: must be one of {FORMATS}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size}: must be >= 1 (the example batch; the exported one is dynamic)")
    _check_exportable(model, fmt)
    wrapper = LogitsModel(model.net).eval().cpu()
    example = torch.randn(int(batch_size), 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        program = export_program(wrapper, example)
        files = write_onnx(program, path, opset) if fmt == "onnx" else write_torchscript(program, path)
    except FGZoomError:
        raise
    except Exception as e:
        raise FGZoomError(f"format={fmt}: exporting the model failed ({_first_line(e)})") from e
    error = None
    if verify:
        images = torch.randn(int(batch_size) + 1, 3, image_size, image_size,
                             generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = wrapper(images)
        got = run_exported(path, fmt, images)
        if got is None:
            log.warning("verify: onnxruntime is not installed; %s was not run", path)
        else:
            error = float((got.float() - expected.float()).abs().max())
            if not math.isfinite(error) or error > VERIFY_TOLERANCE:
                raise FGZoomError(f"format={fmt}: the exported model differs from PyTorch by {error:.3g} (max abs "
                                  f"logit) on a batch of {len(images)}; pass verify=false to keep {path} anyway")
            log.info("verify: %s matches PyTorch on a batch of %d (max abs logit error %.3g)", path.name,
                     len(images), error)
    return {"files": files, "max_abs_error": error}


def output_path(out: str | None, output_dir: Path, fmt: str) -> Path:
    """``out`` (a file; a folder -> ``<out>/model<suffix>``), default ``<output_dir>/model<suffix>``."""
    if out is None:
        return output_dir / f"model{SUFFIXES[fmt]}"
    path = Path(str(out)).expanduser()
    if path.is_dir() or str(out).endswith(("/", "\\")):
        return path / f"model{SUFFIXES[fmt]}"
    return path


def export(cfg: DictConfig) -> Path:
    """Export ``cfg.ckpt_path`` in ``cfg.format`` to ``cfg.out`` (default ``<run>/model.onnx`` or ``model.pt``)
    with ``<stem>.json`` beside it (module docstring). Returns the model file's path."""
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt}: must be one of {FORMATS}")
    ckpt = resolve_ckpt_path(cfg.ckpt_path, str(cfg.paths.output_dir))
    trust = trusts_checkpoints(cfg)
    meta = read_checkpoint_meta(ckpt, trust)
    data = saved_transform_config(meta, ckpt)  # values only: the input size and normalization
    model = load_model(ckpt, trust).eval()  # configure_model is not called: a compile=true backbone stays eager
    names = meta.get("class_names") or model.hparams.class_names
    transform = eval_transform_args(data, model.hparams.backbone["name"])
    path = output_path(cfg.get("out"), Path(cfg.paths.output_dir), fmt)
    result = export_model(model, path, fmt, int(transform["image_size"]), int(cfg.batch_size), int(cfg.opset),
                          bool(cfg.verify))
    size = int(transform["image_size"])
    sidecar = {
        "format": fmt,
        "file": path.name,
        "checkpoint": str(Path(ckpt).resolve()),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32",
                  "layout": "NCHW, RGB, scaled to [0, 1] then (x - mean) / std"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(names) if names else model.hparams.num_classes],
                   "dtype": "float32",
                   "meaning": "prediction logits (zoom model: fused log-probabilities); argmax = class index"},
        "image_size": size,
        "crop_pct": transform["crop_pct"],
        "resize_mode": transform["resize_mode"],
        "mean": list(transform["mean"]),
        "std": list(transform["std"]),
        "class_names": list(names) if names else None,
        "model": {"backbone": model.hparams.backbone["name"], "zoom": model.hparams.zoom},
        "opset": int(cfg.opset) if fmt == "onnx" else None,
        "torch": torch.__version__,
        "max_abs_error": result["max_abs_error"],
    }
    sidecar_path = path.with_suffix(".json")
    sidecar_path.write_text(json.dumps(sidecar, indent=2) + "\n")
    log.info("wrote %s and %s", ", ".join(str(f) for f in result["files"]), sidecar_path)
    return path
