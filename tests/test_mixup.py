"""data.mixup: timm's Mixup/CutMix on training batches, reproducible per batch; soft targets in the loss
(label smoothing as timm's mixup targets); val/test never mixed; bad values are one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from timm.data.mixup import mixup_target

from fgzoom.cli.train import train
from fgzoom.data.mixing import BatchMixing, MixupConfig
from fgzoom.errors import ConfigError
from fgzoom.models.loss import FGVCLoss
from tests.helpers import add_trainer_callbacks, compose_config, run_script, tiny_overrides


def _batch(n: int = 6, k: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 3, 8, 8, generator=g), "label": torch.arange(n) % k, "index": torch.arange(n)}


@pytest.mark.parametrize("options", [{"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0}, {"mixup_alpha": 0.8, "cutmix_alpha": 1.0},
                                     {"mixup_alpha": 0.8, "mode": "elem"}, {"cutmix_minmax": [0.2, 0.6]}])
def test_mixing_is_a_function_of_the_seed_and_leaves_the_input_alone(options):
    mixing = BatchMixing(MixupConfig.from_options(options), num_classes=4)
    batch = _batch()
    original = batch["image"].clone()
    first, again, other = mixing(batch, seed=1), mixing(batch, seed=1), mixing(batch, seed=2)
    assert torch.equal(batch["image"], original)  # timm mixes in place; the caller's batch is untouched
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["target"], again["target"])
    assert not torch.equal(first["target"], other["target"])
    assert first["target"].shape == (6, 4) and torch.allclose(first["target"].sum(-1), torch.ones(6))
    assert torch.equal(first["label"], first["target"].argmax(-1))
    assert torch.equal(first["index"], batch["index"])


def test_an_odd_batch_mixes_all_but_the_last_image():
    mixing = BatchMixing(MixupConfig(mixup_alpha=1.0), num_classes=4)
    batch = _batch(5)
    out = mixing(batch, seed=3)
    assert torch.equal(out["image"][4], batch["image"][4])
    assert torch.equal(out["target"][4], F.one_hot(batch["label"][4], 4).float())
    assert not torch.equal(out["image"][:4], batch["image"][:4])


def test_mixed_cross_entropy_with_smoothing_equals_timms_smoothed_targets():
    """One smoothing key (model.label_smoothing) for hard and mixed labels gives exactly timm's targets."""
    logits, labels = torch.randn(4, 5), torch.tensor([0, 3, 1, 4])
    lam, smoothing = 0.7, 0.1
    mixed = lam * F.one_hot(labels, 5).float() + (1 - lam) * F.one_hot(labels.flip(0), 5).float()
    ours = FGVCLoss({"zoom": 0.0, "attention": 0.0}, 5, label_smoothing=smoothing)({"logits_raw": logits}, labels, mixed)
    timms = torch.sum(-mixup_target(labels, 5, lam, smoothing) * F.log_softmax(logits, -1), -1).mean()
    torch.testing.assert_close(ours, timms)


@pytest.mark.parametrize(("options", "message"), [
    ({"mixup_alpha": -1}, r"^data.mixup.mixup_alpha=-1: must be >= 0"),
    ({"prob": 2.0}, r"^data.mixup.prob=2.0: must be a probability"),
    ({"mode": "pairs"}, r"^data.mixup.mode='pairs': must be one of batch, pair, elem"),
    ({"alpha": 1.0}, r"^data.mixup.alpha: unknown key; valid: mixup_alpha"),
    ({"cutmix_minmax": [0.5, 0.2]}, r"^data.mixup.cutmix_minmax=\[0.5, 0.2\]: must be"),
])
def test_bad_values_are_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        MixupConfig.from_options(options)


def test_all_zero_is_off():
    assert MixupConfig.from_options({"mixup_alpha": 0.0, "cutmix_alpha": 0.0}) is None
    assert MixupConfig.from_options(None) is None


class _SeenBatches(Callback):
    def __init__(self) -> None:
        self.train: list[dict] = []
        self.val: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.append(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.append(batch)


@pytest.mark.parametrize("model", ["zoom", "plain"])
def test_training_batches_are_mixed_and_evaluation_batches_are_not(tmp_path, synthetic_root, model, monkeypatch):
    seen = _SeenBatches()
    add_trainer_callbacks(monkeypatch, seen)
    cfg = compose_config("train.yaml", [*tiny_overrides(synthetic_root), f"model={model}", "data.mixup.mixup_alpha=0.8",
                                        "data.mixup.cutmix_alpha=1.0", "figures_every_n_epochs=0"], tmp_path)
    metrics = train(cfg)
    assert seen.train and all("target" in b and b["target"].shape[1] == 4 for b in seen.train)
    assert any(b["target"].max() < 1.0 for b in seen.train)  # some image really is a mixture
    assert seen.val and all("target" not in b for b in seen.val)
    assert 0.0 <= metrics["val/acc"] <= 1.0


@pytest.mark.slow  # a whole train/eval through the scripts: CI runs the slow suite too
def test_short_run_from_the_command_line(tmp_path, synthetic_root):
    result = run_script("train.py", *tiny_overrides(synthetic_root), "data.mixup.mixup_alpha=0.8",
                        "data.mixup.cutmix_alpha=1.0", "trainer.limit_train_batches=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    bad = run_script("train.py", *tiny_overrides(synthetic_root), "data.mixup.mode=pairs", f"hydra.run.dir={tmp_path / 'b'}")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error: data.mixup.mode='pairs'")
