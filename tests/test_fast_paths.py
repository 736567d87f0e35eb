"""Fast paths with the zoom model: bf16 autocast, channels_last, torch.compile, gradient accumulation, and
no host reads in the zoom step."""

from __future__ import annotations

import copy

import hydra
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from fgzoom.cli.train import build
from fgzoom.models.module import FGVCModule
from fgzoom.models.optim import LR_SCRATCH
from tests.helpers import compose_config, tiny_overrides

HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu")


def _tiny(synthetic_root, *extra: str) -> list[str]:
    """tiny_overrides without the callback entry (the overrides below choose callbacks themselves)."""
    return [*[o for o in tiny_overrides(synthetic_root) if not o.startswith("callbacks.")], *extra]


# ------------------------------------------------------------------ mixed precision
@pytest.mark.parametrize("level", ["feature", "image"])
def test_zoom_forward_backward_under_bf16_autocast(level):
    torch.manual_seed(0)
    module = FGVCModule(backbone={"name": "resnet18"}, num_classes=5, zoom={"level": level}).train()
    x, y = torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
        loss = module.criterion(out, y)
    loss.backward()
    assert out["logits_raw"].dtype == out["logits_zoom"].dtype == torch.bfloat16  # autocast reached the net
    assert out["logits"].dtype == torch.float32  # the fusion runs in fp32
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_zoom_model_trains_with_bf16_mixed(tmp_path, synthetic_root):
    cfg = compose_config("train.yaml", _tiny(synthetic_root, "trainer.precision=bf16-mixed", "debug=fast"), tmp_path)
    datamodule, model, trainer = build(cfg)
    assert trainer.precision == "bf16-mixed"
    dtypes = []
    model.net.split.model.get_classifier().register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1
    assert torch.bfloat16 in dtypes  # the train step ran under bf16 autocast
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------ channels_last
@pytest.mark.parametrize("level", ["feature", "image"])
def test_channels_last_matches_contiguous(level):
    torch.manual_seed(0)
    # glimpse boxes: a real crop at the attention peak (threshold boxes of an untrained head cover it all)
    zoom = {"level": level, "box": "glimpse", "glimpse_size": 0.5}
    options = dict(backbone={"name": "resnet18"}, num_classes=5, zoom=zoom)
    dense, cl = FGVCModule(**options), FGVCModule(**options, channels_last=True)
    cl.load_state_dict(dense.state_dict())
    assert cl.net.split.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = torch.randn(3, 3, 96, 96), torch.tensor([0, 1, 2])
    for training in (False, True):
        dense.train(training)
        cl.train(training)
        torch.manual_seed(1)  # the same random thresholds in training
        a = dense.net(x, return_zoomed=True)
        torch.manual_seed(1)
        b = cl.net(x.contiguous(memory_format=torch.channels_last), return_zoomed=True)
        assert b["zoomed"].is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a["boxes"], b["boxes"])
        side = 3 if level == "feature" else 48  # half of the 6x6 (stride 16) or 96x96 frame
        assert (a["boxes"][:, 2:] - a["boxes"][:, :2] == side).all()
        for key in ("logits", "logits_raw", "logits_zoom", "logits_attention", "zoomed"):
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4, msg=f"{key} {training=}")
        if training:
            dense.criterion(a, y).backward()
            cl.criterion(b, y).backward()
            for (name, p), q in zip(dense.named_parameters(), cl.parameters(), strict=True):
                if p.grad is not None:  # summation order differs: compare relative to the largest entry
                    error = (q.grad - p.grad).abs().max()
                    assert error <= 1e-3 * p.grad.abs().max() + 1e-7, f"{name}: {error}"


# ------------------------------------------------------------------ torch.compile
@pytest.mark.parametrize("zoom", [None, {"level": "feature"}, {"level": "image"}], ids=["plain", "feature", "image"])
def test_compile_keeps_state_dict_keys(zoom):
    """Compilation is lazy (nothing compiles until the first call), so this checks the wiring quickly."""
    options = dict(backbone={"name": "resnet18"}, num_classes=4, zoom=zoom)
    compiled, eager = FGVCModule(**options, compile=True), FGVCModule(**options)
    compiled.configure_model()
    compiled.configure_model()  # Lightning calls it before every fit/validate/test: idempotent
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in key for key in compiled.state_dict())
    eager.load_state_dict(compiled.state_dict())  # strict: a compile=true checkpoint loads without compile
    twin = copy.deepcopy(compiled)  # a deep copy runs its own layers, not the original's
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    assert list(twin.state_dict()) == list(eager.state_dict())
    assert all(p.abs().sum() > 0 for p in compiled.parameters() if p.ndim > 1)


@pytest.mark.slow
def test_compiled_training_matches_eager_and_its_checkpoint_loads_without_compile(tmp_path, synthetic_root):
    cfg = compose_config(
        "train.yaml",
        _tiny(synthetic_root, "model.compile=true", "callbacks=none", "logger=none", "+trainer.max_steps=1",
              "trainer.limit_val_batches=0", "data.batch_size=2"),
        tmp_path,
    )
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    assert model.net.split.compiled
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    loaded = FGVCModule.load_from_checkpoint(path, map_location="cpu", weights_only=False, compile=False)
    assert not loaded.hparams.compile and not loaded.net.split.compiled
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(2, 3, 48, 48)
    model.train()
    loaded.train()
    torch.manual_seed(0)
    a = model.net(x)  # the compiled graphs (train mode, batch 2) already exist
    torch.manual_seed(0)
    b = loaded.net(x)
    for key in ("logits_raw", "logits_zoom"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ gradient accumulation
class _LearningRates(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("schedule", ["cosine", "one_cycle"])
def test_gradient_accumulation_steps_the_schedule_once_per_optimizer_step(tmp_path, synthetic_root, schedule):
    cfg = compose_config(
        "train.yaml",
        _tiny(synthetic_root, "callbacks=none", "logger=none", "trainer.max_epochs=2", f"model/scheduler={schedule}",
              "trainer.limit_train_batches=4", "trainer.limit_val_batches=1", "trainer.accumulate_grad_batches=2"),
        tmp_path,
    )
    datamodule, model, trainer = build(cfg)
    seen = _LearningRates()
    trainer.callbacks.append(seen)
    trainer.fit(model, datamodule=datamodule)
    assert seen.batches == 8 and trainer.global_step == 4 == trainer.estimated_stepping_batches
    # The schedule runs over the 4 optimizer steps (2 per epoch), one scheduler step after each optimizer
    # step; not over the 8 batches.
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR_SCRATCH)  # model.optimizer.lr=null
    scheduler = hydra.utils.instantiate(cfg.model.scheduler)(optimizer, total_steps=4, steps_per_epoch=2)
    expected = []
    for step in range(4):
        expected.append(optimizer.param_groups[0]["lr"])
        scheduler.step_update(num_updates=step + 1) if schedule == "cosine" else scheduler.step()
    assert seen.lrs == pytest.approx(expected)
    if schedule == "cosine":  # warmup_epochs=1: 2 steps from warmup_lr_init
        assert seen.lrs[0] == pytest.approx(cfg.model.scheduler.warmup_lr_init)
        assert max(seen.lrs) == pytest.approx(seen.lrs[2]) and seen.lrs[2] > 10 * seen.lrs[0]
    else:  # one-cycle from lr / 25, the warm-up ending at step 0.3 * 4 - 1 (the peak is passed at step 1)
        assert seen.lrs[0] == pytest.approx(LR_SCRATCH / 25) and seen.lrs[-1] < seen.lrs[1] == max(seen.lrs)


# ------------------------------------------------------------------ host synchronisation
def test_feature_zoom_step_reads_nothing_back_to_the_host(monkeypatch):
    """Boxes, crop and fusion stay on the device: no value of a tensor is read by Python in the step."""
    torch.manual_seed(0)
    module = FGVCModule(backbone={"name": "resnet18"}, num_classes=5, zoom={"level": "feature"})
    x, y = torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 2])
    module.train()
    module.criterion(module(x), y).backward()  # warm-up: builds crop_resize's cached weight tables

    def forbidden(name):
        def read(*args, **kwargs):
            raise AssertionError(f"Tensor.{name} read a value back to the host in the zoom step")
        return read

    with monkeypatch.context() as m:
        for name in HOST_READS:
            m.setattr(torch.Tensor, name, forbidden(name))
        for training in (True, False):
            module.train(training)
            with torch.set_grad_enabled(training):
                loss = module.criterion(module(x), y)
                if training:
                    loss.backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("level", ["feature", "image"])
def test_zoom_step_does_not_synchronise_cuda(level):
    torch.manual_seed(0)
    module = FGVCModule(backbone={"name": "resnet18"}, num_classes=5, zoom={"level": level}).cuda().train()
    x, y = torch.randn(4, 3, 64, 64, device="cuda"), torch.tensor([0, 1, 2, 3], device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module.criterion(module(x), y)
        loss.backward()

    step()  # warm-up: crop_resize's cached weight tables, library set-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
