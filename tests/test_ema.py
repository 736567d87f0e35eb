"""model.ema: the average timm's warm-up formula gives, evaluated in place of the raw weights during fit and
after it, in every checkpoint's state_dict (raw weights kept for resuming); bad values are one line."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from fgzoom.callbacks.ema import ema_decay, ema_multi_avg_fn
from fgzoom.cli.train import train
from fgzoom.errors import ConfigError
from fgzoom.models.module import FGVCModule
from tests.helpers import add_trainer_callbacks, compose_config, run_script, tiny_overrides


def test_decay_ramps_up_as_timms_and_is_capped():
    assert ema_decay(0.999, 1) == pytest.approx(1 - 2 ** (-2 / 3))
    assert ema_decay(0.999, 100) == pytest.approx(1 - 101 ** (-2 / 3))
    assert ema_decay(0.999, 10**6) == 0.999
    assert ema_decay(0.999, 1, warmup=False) == 0.999


def test_update_lerps_floats_and_copies_counts():
    update = ema_multi_avg_fn(0.9, warmup=False)
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    update(averaged, current, torch.tensor(5))
    torch.testing.assert_close(averaged[0], torch.full((3,), 0.1))
    counts = [torch.tensor(3)]
    update(counts, [torch.tensor(7)], torch.tensor(5))
    assert counts[0].item() == 7


@pytest.mark.parametrize(("ema", "message"), [
    ({"decay": 1.5}, r"^model.ema.decay=1.5: must be in \(0, 1\)"),
    ({"decay": 0.9, "warmup": "yes"}, r"^model.ema.warmup='yes': must be true or false"),
    ({"decay": 0.9, "beta": 1}, r"^model.ema.beta: unknown key; valid: decay, warmup"),
])
def test_bad_values_are_one_line_at_build_time(ema, message):
    with pytest.raises(ConfigError, match=message):
        FGVCModule(backbone={"name": "resnet18"}, num_classes=3, ema=ema)


def test_null_decay_is_off():
    module = FGVCModule(backbone={"name": "resnet18"}, num_classes=3, ema={"decay": None, "warmup": True})
    assert module.configure_callbacks() == []


class _ManualEMA(Callback):
    """The average of the raw parameters after every optimizer step, computed by hand."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.average: dict[str, torch.Tensor] = {}
        self.updates = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.updates += 1
        for name, param in pl_module.named_parameters():
            if self.updates == 1:
                self.average[name] = param.detach().clone()
            else:
                d = ema_decay(self.decay, self.updates)
                self.average[name] = d * self.average[name] + (1 - d) * param.detach()


@pytest.mark.parametrize("model", ["zoom", "plain"])
def test_checkpoints_hold_the_average_and_validation_evaluates_it(tmp_path, synthetic_root, model, monkeypatch):
    manual = _ManualEMA(0.8)
    add_trainer_callbacks(monkeypatch, manual)
    cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), f"model={model}", "model.ema.decay=0.8",
                                        "trainer.max_epochs=2", "figures_every_n_epochs=0"], tmp_path)
    metrics = train(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert manual.updates == last["global_step"] > 2
    for name, average in manual.average.items():
        torch.testing.assert_close(last["state_dict"][name], average, rtol=1e-5, atol=1e-6, msg=name)
    raw = last["current_model_state"]
    assert any(not torch.equal(raw[n], last["state_dict"][n]) for n in manual.average)
    # the best checkpoint's score was measured during fit (EMA swapped in); the validation after fit loads
    # the checkpoint's state_dict (the EMA weights) and must measure the same
    best = torch.load(next((tmp_path / "checkpoints").glob("best-*.ckpt")), map_location="cpu", weights_only=False)
    score = next(v["best_model_score"] for k, v in best["callbacks"].items() if "LatestBestCheckpoint" in k)
    assert metrics["val/acc"] == pytest.approx(float(score))


@pytest.mark.slow  # a whole train/eval through the scripts: CI runs the slow suite too
def test_short_run_and_eval_from_the_command_line(tmp_path, synthetic_root):
    run = tmp_path / "run"
    result = run_script("train.py", *tiny_overrides(synthetic_root), "model.ema.decay=0.9", f"hydra.run.dir={run}",
                        "figures_every_n_epochs=0")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = run_script("eval.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "trainer=cpu", "logger=none",
                           "eval.num_images=0", f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]


def test_step_bench_runs_the_switch_rows():
    from fgzoom.bench.step_bench import SWITCH_VARIANTS, bench_train_step, default_variants

    names = [v["name"] for v in default_variants((-2,), box_variants=False, switches=True)]
    assert names == ["plain", "zoom feature stage=-2", *[v["name"] for v in SWITCH_VARIANTS], "zoom image"]
    rows = bench_train_step("resnet18", image_size=32, batch_size=4, repeats=1, warmup=1, num_classes=5,
                            variants=[{"name": "plain", "zoom": None}, *SWITCH_VARIANTS])
    assert [r["name"] for r in rows] == ["plain", *[v["name"] for v in SWITCH_VARIANTS]]
    assert all(r["step_ms"] > 0 and r["ratio"] > 0 for r in rows)
