"""Evaluation and prediction through their entry points (``evaluate(cfg)``, ``predict(cfg)``, the scripts):
metrics, TTA, confusion matrix, per-class accuracy, per-image CSVs, picture grids, refusals; and the pieces
they are built from (``FGVCModule.predict_step`` under ``trainer.predict``, box CSV cells, figures).

One tiny zoom model is trained once for the module; everything else reuses its checkpoint.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from PIL import Image

from fgzoom.cli.evaluate import evaluate
from fgzoom.cli.predict import eval_transform_args, predict
from fgzoom.cli.runtime import one_line_errors
from fgzoom.cli.train import train
from fgzoom.data.batches import LoaderDataModule, collate_uint8, normalize_images
from fgzoom.errors import ConfigError, FGZoomError
from fgzoom.eval.confusion import (
    ANNOTATE_MAX,
    MAX_TICKS,
    confusion_figure,
    confusion_matrix,
    write_confusion_png,
    write_per_class_csv,
)
from fgzoom.eval.figures import dataset_batch, grid_data, grid_figure, save_figure, select_indices
from fgzoom.eval.predictions import (
    Predictions,
    box_cells,
    box_columns,
    box_header,
    gather_predictions,
    tta_views,
)
from fgzoom.models.module import FGVCModule
from fgzoom.ops import crop_resize
from fgzoom.ops.boxes import matched_box_iou
from fgzoom.ops.crop_affine import crop_affine
from tests.helpers import TINY_SYNTHETIC, compose_config, run_script, tiny_overrides

CLASSES = 4
BACKBONE = {"name": "resnet18", "pretrained": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root) -> Path:
    """A zoom model trained for one epoch on the tiny synthetic set; returns its run folder."""
    run = tmp_path_factory.mktemp("trained") / "run"
    overrides = [*tiny_overrides(synthetic_root), "test=false", "logger=none", "callbacks.zoom_figures.num_images=4"]
    train(compose_config("train.yaml", overrides, run))
    return run


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory) -> tuple[dict, Path]:
    """``evaluate`` of the trained checkpoint with TTA on; returns (metrics, eval run folder)."""
    out = tmp_path_factory.mktemp("eval") / "run"
    overrides = [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", "trainer=cpu", "logger=none", "eval.tta=true",
                 "eval.num_images=6"]
    return evaluate(compose_config("eval.yaml", overrides, out)), out


@pytest.fixture(scope="module")
def datamodule(synthetic_root):
    from fgzoom.data.datamodule import FGVCDataModule

    dm = FGVCDataModule("synthetic", str(synthetic_root), image_size=48, batch_size=4, num_workers=0,
                        reader_options={"synthetic": dict(TINY_SYNTHETIC)})
    dm.setup()
    return dm


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _is_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


# ---------------------------------------------------------------------------------------------- eval
def test_eval_metrics_json_has_every_key_in_range(evaluated):
    metrics, out = evaluated
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    keys = ("acc", "acc_raw", "acc_zoom", "acc_top5", "acc_macro", "degenerate_frac", "iou_mean", "loc_acc@0.5",
            "maxboxacc_v2", "maxboxacc@0.3", "maxboxacc@0.5", "maxboxacc@0.7", "boxacc_v2@val_tau", "acc_tta")
    pixels = ("box_dy", "box_dx", "box_center_err")  # box-centre error, pixels of the 48 px input
    assert set(saved) == {f"test/{key}" for key in (*keys, *pixels, "loss")}
    for key in keys:
        assert saved[f"test/{key}"] is not None and 0.0 <= saved[f"test/{key}"] <= 1.0, key
    assert saved["test/loss"] > 0
    assert abs(saved["test/box_dy"]) < 48 and abs(saved["test/box_dx"]) < 48
    assert max(abs(saved["test/box_dy"]), abs(saved["test/box_dx"])) <= saved["test/box_center_err"] < 48 * 2 ** 0.5


def test_eval_accuracies_are_those_of_the_predictions_csv(evaluated):
    """``test/acc`` and ``test/acc_tta`` count the CSV's ``pred`` and ``pred_tta`` columns; TTA (hflip x three
    thresholds of the default moments boxes) changes the probabilities."""
    metrics, out = evaluated
    rows = _rows(out / "test_predictions.csv")
    header, rows = rows[0], rows[1:]
    true, pred, pred_tta = (header.index(c) for c in ("true", "pred", "pred_tta"))
    assert metrics["test/acc"] == pytest.approx(sum(r[true] == r[pred] for r in rows) / len(rows))
    assert metrics["test/acc_tta"] == pytest.approx(sum(r[true] == r[pred_tta] for r in rows) / len(rows))
    prob, prob_tta = header.index("prob"), header.index("prob_tta")
    assert any(abs(float(r[prob]) - float(r[prob_tta])) > 1e-6 for r in rows)


def test_eval_confusion_and_per_class_agree_with_the_logged_metrics(evaluated, synthetic_root):
    metrics, out = evaluated
    names = sorted(p.name for p in (synthetic_root / "train").iterdir())
    rows = _rows(out / "confusion_matrix.csv")
    assert rows[0][1:] == names and [r[0] for r in rows[1:]] == names
    counts = torch.tensor([[int(v) for v in r[1:]] for r in rows[1:]])
    n_test = CLASSES * TINY_SYNTHETIC["test_per_class"]
    assert int(counts.sum()) == n_test
    assert counts.diagonal().sum().item() / n_test == pytest.approx(metrics["test/acc"])

    per_class = _rows(out / "per_class_accuracy.csv")
    assert per_class[0] == ["class", "n", "acc"] and [r[0] for r in per_class[1:]] == names
    accs = [float(r[2]) for r in per_class[1:]]
    assert sum(accs) / len(accs) == pytest.approx(metrics["test/acc_macro"], abs=1e-5)

    predictions = _rows(out / "test_predictions.csv")
    assert predictions[0][:5] == ["index", "path", "true", "pred", "prob"] and len(predictions) == n_test + 1
    assert _is_png(out / "confusion_matrix.png")[0] > 300
    assert _is_png(out / "figures" / "eval_grid.png")[0] > 300


def test_eval_without_tta_has_no_tta_key_and_training_wrote_epoch_figures(trained, tmp_path):
    assert _is_png(trained / "figures" / "epoch000.png")[0] > 300
    overrides = [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", "trainer=cpu", "logger=none",
                 "eval.num_images=0", "eval.confusion=false", "split=val"]
    metrics = evaluate(compose_config("eval.yaml", overrides, tmp_path))
    assert "val/acc" in metrics and "val/acc_tta" not in metrics
    assert not (tmp_path / "figures").exists() and not (tmp_path / "confusion_matrix.csv").exists()


@pytest.fixture(scope="module")
def trained_two_affine(tmp_path_factory, synthetic_root) -> Path:
    """A zoom model with two regions and the affine sampler (float boxes [B, 2, 4]), one tiny epoch."""
    run = tmp_path_factory.mktemp("trained_two_affine") / "run"
    overrides = [*tiny_overrides(synthetic_root), "test=false", "logger=none", "callbacks.zoom_figures.num_images=4",
                 "model.zoom.num_regions=2", "model.zoom.sampler=affine"]
    train(compose_config("train.yaml", overrides, run))
    return run


def _float_cell(cell: str) -> float:
    assert "." in cell and len(cell.split(".")[1]) == 2, cell  # float boxes with 2 decimals
    return float(cell)


def test_eval_and_predict_with_two_affine_regions(trained_two_affine, datamodule, synthetic_root, tmp_path):
    """k=2 float boxes through evaluate (TTA hflip x thresholds, localization of region 1, CSV with both
    boxes, grid) and predict (CSV, figures); the training run pictured them too."""
    assert _is_png(trained_two_affine / "figures" / "epoch000.png")[0] > 300
    ckpt = trained_two_affine / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    metrics = evaluate(compose_config(
        "eval.yaml", [f"ckpt_path={ckpt}", "trainer=cpu", "logger=none", "eval.tta=true", "eval.num_images=4"], out))
    for key in ("acc", "acc_zoom", "acc_tta", "iou_mean", "loc_acc@0.5"):
        assert metrics[f"test/{key}"] is not None and 0.0 <= metrics[f"test/{key}"] <= 1.0, key
    assert _is_png(out / "figures" / "eval_grid.png")[0] > 300

    rows = _rows(out / "test_predictions.csv")
    boxes = [f"box{r}_{c}" for r in (1, 2) for c in ("y0", "x0", "y1", "x1")]
    assert rows[0] == ["index", "path", "true", "pred", "prob", "pred_tta", "prob_tta", *boxes]
    from fgzoom.data.datamodule import FGVCDataModule

    # the ground truth in the evaluated geometry: the run's data config (synthetic: crop_pct 1.0), not the
    # shared fixture's default centre crop
    dm = FGVCDataModule("synthetic", str(synthetic_root), image_size=48, batch_size=4, num_workers=0,
                        crop_pct=1.0, reader_options={"synthetic": dict(TINY_SYNTHETIC)})
    dm.setup()
    dataset = dm.dataset("test")
    gt, region1 = [], []
    for r in rows[1:]:
        values = [_float_cell(v) for v in r[-8:]]
        for y0, x0, y1, x1 in (values[:4], values[4:]):
            assert 0 <= y0 < y1 <= 48 and 0 <= x0 < x1 <= 48
        gt.append(dataset[int(r[0])]["box"])
        region1.append(values[:4])
    # the logged localization scores region 1 (the most salient), to the CSV's 2-decimal rounding
    region1, gt = torch.tensor(region1), torch.stack(gt).float()
    iou = matched_box_iou(region1, gt)
    assert float(iou.mean()) == pytest.approx(metrics["test/iou_mean"], abs=0.02)
    shift = (region1[:, :2] + region1[:, 2:] - gt[:, :2] - gt[:, 2:]) / 2  # centre of region 1 - centre of GT
    assert metrics["test/box_dy"] == pytest.approx(float(shift[:, 0].mean()), abs=0.01)
    assert metrics["test/box_dx"] == pytest.approx(float(shift[:, 1].mean()), abs=0.01)
    assert metrics["test/box_center_err"] == pytest.approx(float(shift.norm(dim=1).mean()), abs=0.01)

    cfg = compose_config("predict.yaml", [f"ckpt_path={ckpt}", f"input={synthetic_root / 'test'}", "num_workers=0",
                                          "top_k=2", "figures=true"], tmp_path / "predict")
    predicted = _rows(predict(cfg))
    assert predicted[0] == ["path", "class_1", "prob_1", "class_2", "prob_2", *boxes]
    by_path = {r[1]: r for r in rows[1:]}
    assert len(predicted) == len(rows)
    for r in predicted[1:]:
        assert r[-8:] == by_path[r[0]][-8:], r[0]  # the same boxes as evaluate
    pictures = sorted((tmp_path / "predict" / "figures").glob("*.png"))
    assert len(pictures) == len(rows) - 1 and _is_png(pictures[0])


# ---------------------------------------------------------------------------------------------- predict
def test_predict_folder_agrees_with_eval(trained, evaluated, synthetic_root, tmp_path):
    _, eval_out = evaluated
    cfg = compose_config(
        "predict.yaml",
        [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"input={synthetic_root / 'test'}", "num_workers=0"],
        tmp_path,
    )
    rows = _rows(predict(cfg))
    k = min(5, CLASSES)
    boxes = ["box1_y0", "box1_x0", "box1_y1", "box1_x1"]  # one region; the default affine sampler: float pixels
    assert rows[0] == ["path", *[c for j in range(1, k + 1) for c in (f"class_{j}", f"prob_{j}")], *boxes]
    images = sorted((synthetic_root / "test").rglob("*.png"))
    assert [r[0] for r in rows[1:]] == [str(p) for p in images]
    for r in rows[1:]:
        probs = [float(p) for p in r[2:2 * k + 1:2]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-4)
        y0, x0, y1, x1 = (float(v) for v in r[-4:])
        assert 0 <= y0 < y1 <= 48 and 0 <= x0 < x1 <= 48
    eval_rows = _rows(eval_out / "test_predictions.csv")
    assert eval_rows[0][-4:] == boxes
    by_path = {r[1]: r for r in eval_rows[1:]}
    for r in rows[1:]:
        assert r[1] == by_path[r[0]][3], r[0]  # same top-1 class
        assert float(r[2]) == pytest.approx(float(by_path[r[0]][4]), abs=1e-5)
        assert r[-4:] == by_path[r[0]][-4:]  # same boxes


def _image_folder(source: Path, folder: Path, sizes: dict[str, tuple[int, int]]) -> dict[Path, tuple[int, int]]:
    """Synthetic test images resized to ``sizes`` (name -> (H, W)) in ``folder``; returns path -> (H, W)."""
    folder.mkdir(parents=True)
    images = sorted(source.rglob("*.png"))
    out = {}
    for (name, (h, w)), image in zip(sizes.items(), images, strict=False):
        with Image.open(image) as im:
            im.convert("RGB").resize((w, h)).save(folder / name)
        out[folder / name] = (h, w)
    return out


@pytest.mark.parametrize("resize_mode", ["square", "shorter"])
def test_predict_writes_the_zoom_boxes_on_each_image_file(trained, synthetic_root, tmp_path, resize_mode):
    """The checkpoint's eval transform resizes (to 48 / 0.75 = 64, square or shorter side) and centre-crops 48:
    the CSV's boxes are the model's boxes on its 48 px input mapped back through both onto each file, square or
    not, and lie inside the central part of the file the network saw; boxes=false writes none."""
    from torchvision.transforms.v2 import functional as TF

    from fgzoom.checkpoints.io import load_model
    from fgzoom.data.decode import read_image
    from fgzoom.data.transforms import build_transforms

    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    data = checkpoint["fgzoom"]["config"]["data"]
    data.update(crop_pct=0.75, resize_mode=resize_mode)
    ckpt = tmp_path / "cropped.ckpt"
    torch.save(checkpoint, ckpt)
    files = _image_folder(synthetic_root / "test", tmp_path / "in",
                          {"square.png": (48, 48), "wide.png": (60, 90), "tall.png": (120, 50)})
    args = [f"ckpt_path={ckpt}", f"input={tmp_path / 'in'}", "num_workers=0", "batch_size=1", "top_k=1"]
    rows = _rows(predict(compose_config("predict.yaml", args, tmp_path / "p")))
    assert rows[0] == ["path", "class_1", "prob_1", "box1_y0", "box1_x0", "box1_y1", "box1_x1"]
    assert sorted(r[0] for r in rows[1:]) == sorted(str(p) for p in files)

    model = load_model(str(ckpt)).eval()
    args_t = eval_transform_args(data, model.hparams.backbone["name"])
    transform = build_transforms(train=False, image_size=48, crop_pct=0.75, resize_mode=resize_mode)
    for r in rows[1:]:
        path = Path(r[0])
        h, w = files[path]
        image = read_image(path)
        with torch.no_grad():
            x = normalize_images(transform(image)[None], args_t["mean"], args_t["std"])
            y0, x0, y1, x1 = model(x)["boxes_image"][0].double().tolist()  # on the 48 px input
        rh, rw = TF.resize(image, [64, 64] if resize_mode == "square" else 64).shape[-2:]  # torchvision's resize
        top, left = round((rh - 48) / 2), round((rw - 48) / 2)  # torchvision's centre crop
        expected = [(y0 + top) * h / rh, (x0 + left) * w / rw, (y1 + top) * h / rh, (x1 + left) * w / rw]
        got = [_float_cell(v) for v in r[-4:]]
        assert got == pytest.approx(expected, abs=0.006), path.name
        # inside the file, and inside the centre crop's part of it (the border the crop cut off has no box)
        assert top * h / rh - 0.006 <= got[0] <= got[2] <= (top + 48) * h / rh + 0.006 <= h + 0.006, path.name
        assert left * w / rw - 0.006 <= got[1] <= got[3] <= (left + 48) * w / rw + 0.006 <= w + 0.006, path.name
    if resize_mode == "square":
        off = _rows(predict(compose_config("predict.yaml", [*args, "boxes=false"], tmp_path / "off")))
        assert off[0] == ["path", "class_1", "prob_1"] and [r[:3] for r in off] == [r[:3] for r in rows]
        with pytest.raises(ConfigError, match="boxes='maybe': must be true or false"):
            predict(compose_config("predict.yaml", [*args, "boxes=maybe"], tmp_path / "bad"))


def test_predict_with_the_plain_model_writes_no_box_columns(synthetic_root, tmp_path):
    """The plain model has no boxes: no box column, whatever ``boxes`` says (an untrained model folder)."""
    from fgzoom.checkpoints.model_folder import save_model_folder

    module = FGVCModule(backbone=BACKBONE, num_classes=CLASSES, class_names=list("abcd"), zoom=None)
    module.run_config = {"data": {"image_size": 48, "crop_pct": 0.75}}
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    folder = save_model_folder(module, checkpoint["fgzoom"], tmp_path / "plain")
    _image_folder(synthetic_root / "test", tmp_path / "in", {"square.png": (48, 48), "wide.png": (60, 90)})
    cfg = compose_config("predict.yaml", [f"ckpt_path={folder}", f"input={tmp_path / 'in'}", "num_workers=0",
                                          "top_k=2"], tmp_path / "p")
    rows = _rows(predict(cfg))
    assert rows[0] == ["path", "class_1", "prob_1", "class_2", "prob_2"] and len(rows) == 3
    assert all(len(r) == 5 for r in rows[1:])


def test_predict_unreadable_image_names_the_file(trained, tmp_path):
    bad = tmp_path / "in" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    Image.new("RGB", (40, 30), "red").save(tmp_path / "in" / "ok.png")
    args = [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"input={bad.parent}", "num_workers=0"]
    with pytest.raises(FGZoomError, match="broken.jpg.*on_bad_image=skip"):
        predict(compose_config("predict.yaml", args, tmp_path / "a"))
    cfg = compose_config("predict.yaml", [*args, "on_bad_image=skip", "top_k=2", "figures=true"], tmp_path / "b")
    rows = _rows(predict(cfg))
    assert [Path(r[0]).name for r in rows[1:]] == ["ok.png"] and len(rows[0]) == 5 + 4  # top-2, one box
    assert _is_png(tmp_path / "b" / "figures" / "00000_ok.png")


# ---------------------------------------------------------------------------------------------- refusals
def test_not_a_checkpoint_is_refused(tmp_path, synthetic_root):
    fake = tmp_path / "fake.ckpt"
    fake.write_text("hello")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        evaluate(compose_config("eval.yaml", [f"ckpt_path={fake}", "trainer=cpu", "logger=none"], tmp_path / "e"))
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match="not an fgzoom checkpoint"):
        predict(compose_config("predict.yaml", [f"ckpt_path={tmp_path / 'other.ckpt'}", f"input={synthetic_root}"],
                               tmp_path / "p"))


def test_checkpoint_with_other_class_names_is_refused(trained, tmp_path, synthetic_root):
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    checkpoint["hyper_parameters"]["class_names"] = list("abcd")
    checkpoint["fgzoom"]["class_names"] = list("abcd")
    torch.save(checkpoint, tmp_path / "renamed.ckpt")
    with pytest.raises(ConfigError, match=r"trained on 4 classes \(\['a', 'b', 'c'\]"):
        evaluate(compose_config("eval.yaml", [f"ckpt_path={tmp_path / 'renamed.ckpt'}", "trainer=cpu", "logger=none"],
                                tmp_path / "e"))
    checkpoint["fgzoom"]["class_names"] = list("wxyz")  # the two copies inside disagree
    torch.save(checkpoint, tmp_path / "torn.ckpt")
    with pytest.raises(ConfigError, match="torn.ckpt: trained on 4 classes"):
        predict(compose_config("predict.yaml", [f"ckpt_path={tmp_path / 'torn.ckpt'}", f"input={synthetic_root}"],
                               tmp_path / "p"))


@pytest.mark.parametrize(("overrides", "match"), [
    (["eval.tta=true", "eval.tta_thresholds=[1.5]"], r"tta_thresholds=\[1.5\]: each threshold must be in \[0, 1\)"),
    (["eval.tta=true", "eval.tta_hflip=false", "eval.tta_thresholds=[]"], "eval.tta=true needs eval.tta_hflip"),
    (["eval.num_images=-1"], "eval.num_images=-1: must be >= 0"),
    (["split=train"], "split='train': must be one of test, val"),
], ids=["threshold", "no-views", "num-images", "split"])
def test_bad_eval_options_are_refused(trained, tmp_path, overrides, match):
    args = [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", "trainer=cpu", "logger=none", *overrides]
    with pytest.raises(ConfigError, match=match):
        evaluate(compose_config("eval.yaml", args, tmp_path))
    assert not (tmp_path / "metrics.json").exists()


def test_eval_and_predict_refuse_more_than_one_process(trained, tmp_path, synthetic_root):
    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(ConfigError, match=r"eval runs on one device \(2 processes requested\): pass trainer.devices=1"):
        evaluate(compose_config("eval.yaml", [ckpt, "trainer=ddp_cpu", "logger=none"], tmp_path / "e"))
    with pytest.raises(ConfigError, match="predict runs on one device"):
        predict(compose_config("predict.yaml", [ckpt, f"input={synthetic_root / 'test'}", "trainer=ddp_cpu"],
                               tmp_path / "p"))
    with pytest.raises(ConfigError, match="top_k=0: must be >= 1"):
        predict(compose_config("predict.yaml", [ckpt, f"input={synthetic_root / 'test'}", "top_k=0"], tmp_path / "p"))


def test_predict_normalization_comes_from_the_checkpoint_else_from_timm():
    saved = {"image_size": 48, "crop_pct": 1.0, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    args = eval_transform_args(saved, "vit_base_patch16_224")
    assert args == {"image_size": 48, "crop_pct": 1.0, "resize_mode": "square", "mean": (0.1, 0.2, 0.3),
                    "std": (0.4, 0.5, 0.6)}
    # a checkpoint without the numbers: the backbone's own (this one is not normalized like ImageNet)
    args = eval_transform_args({"image_size": 48}, "vit_base_patch16_224")
    pretrained = timm.get_pretrained_cfg("vit_base_patch16_224")
    assert args["mean"] == tuple(pretrained.mean) == (0.5, 0.5, 0.5) and args["std"] == tuple(pretrained.std)


def test_predict_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    fake = tmp_path / "fake.ckpt"
    fake.write_text("hello")
    cfg = compose_config("predict.yaml", [f"ckpt_path={fake}", f"input={tmp_path}"], tmp_path / "r")
    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(predict)(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: ckpt_path={fake}: not a readable checkpoint") and err.count("\n") == 1


@pytest.mark.slow
def test_predict_script_reports_a_bad_checkpoint_in_one_line(tmp_path):
    fake = tmp_path / "fake.ckpt"
    fake.write_text("hello")
    result = run_script("predict.py", f"ckpt_path={fake}", f"input={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: ckpt_path={fake}: not a readable checkpoint")
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------- pieces
def test_box_columns_for_k_regions_int_and_float():
    one = torch.tensor([[1, 2, 30, 40]])
    assert box_header(one) == ["box1_y0", "box1_x0", "box1_y1", "box1_x1"]
    assert box_cells(one, 0) == ["1", "2", "30", "40"]
    two = torch.tensor([[[1.0, 2.5, 30.125, 40.0], [0.0, 0.0, 48.0, 47.994]]])
    assert box_header(two)[4:] == ["box2_y0", "box2_x0", "box2_y1", "box2_x1"]
    assert box_cells(two, 0) == ["1.00", "2.50", "30.12", "40.00", "0.00", "0.00", "48.00", "47.99"]
    assert box_header(None) == [] and box_cells(None, 0) == []
    assert box_header(two, prefix="cand")[:2] == ["cand1_y0", "cand1_x0"]  # other boxes of a sample


def test_box_columns_map_the_boxes_onto_each_file():
    """predict's box columns: the zoom boxes of every region through each file's geometry (a resize by 2 and a
    crop at (8, 4); a flip), 2 decimals; none without boxes; a loader without file geometry is refused."""
    boxes = torch.tensor([[[0, 0, 10, 20], [4, 4, 8, 8]], [[1, 2, 3, 4], [0, 0, 48, 48]]])  # [2, 2, 4] slice cells
    frames = torch.tensor([[0.5, -8.0, 0.5, -4.0], [1.0, 0.0, -1.0, 48.0]])
    preds = Predictions(index=torch.arange(2), probs=torch.ones(2, 4) / 4, boxes=boxes, file_to_input=frames,
                        file_size=torch.tensor([[200, 100], [48, 48]]))
    (group,) = box_columns(preds)
    assert group.names == [f"box{r}_{c}" for r in (1, 2) for c in ("y0", "x0", "y1", "x1")]
    assert box_cells(group.values, 0, group.decimals) == ["16.00", "8.00", "36.00", "48.00",
                                                          "24.00", "16.00", "32.00", "24.00"]
    assert box_cells(group.values, 1, group.decimals) == ["1.00", "44.00", "3.00", "46.00",
                                                          "0.00", "0.00", "48.00", "48.00"]
    assert box_columns(Predictions(index=torch.arange(2), probs=torch.ones(2, 4) / 4)) == []
    with pytest.raises(ValueError, match="file_geometry=True"):
        box_columns(Predictions(index=torch.arange(2), probs=torch.ones(2, 4) / 4, boxes=boxes))


def test_confusion_png_stays_readable_at_200_classes(tmp_path):
    k = 200
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(k, (4000,), generator=g)
    probs = torch.rand(4000, k, generator=g)
    probs[torch.arange(4000), labels] += 0.99  # mostly right, so the diagonal shows
    matrix = confusion_matrix(probs, labels, k)
    assert matrix.shape == (k, k) and int(matrix.sum()) == 4000
    names = [f"{i:03d}.A_rather_long_species_name_{i}" for i in range(k)]
    fig = confusion_figure(matrix, names)
    ax = fig.axes[0]
    assert not ax.texts  # no per-cell numbers above ANNOTATE_MAX classes
    assert len(ax.get_xticks()) <= MAX_TICKS and len(ax.get_yticks()) <= MAX_TICKS
    assert len(fig.axes) == 2  # the matrix and its colorbar
    write_confusion_png(tmp_path / "cm.png", matrix, names)
    assert min(_is_png(tmp_path / "cm.png")) > 1500
    small = confusion_figure(matrix[:ANNOTATE_MAX, :ANNOTATE_MAX], names[:ANNOTATE_MAX])
    assert small.axes[0].texts  # small matrices carry their values


def test_per_class_accuracy_csv_leaves_a_class_without_samples_empty(tmp_path):
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.0, 0.9]])
    labels = torch.tensor([0, 1, 1, 0])
    write_per_class_csv(tmp_path / "per_class.csv", probs, labels, ["a", "b", "c"])
    assert _rows(tmp_path / "per_class.csv") == [
        ["class", "n", "acc"], ["a", "2", "0.500000"], ["b", "2", "0.500000"], ["c", "0", ""]
    ]
    assert confusion_matrix(probs, labels, 3).tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("zoom", [{"level": "image", "mode": "bicubic", "align_corners": True, "size": 40,
                                   "sampler": "slice"},
                                  {"level": "feature", "mode": "area", "sampler": "slice"}, None],
                         ids=["image", "feature", "plain"])
def test_grid_shows_the_zoomed_view_the_model_saw(zoom, datamodule, tmp_path):
    torch.manual_seed(0)
    model = FGVCModule(BACKBONE, CLASSES, datamodule.class_names, zoom=zoom)
    dataset = datamodule.dataset("test")
    batch = dataset_batch(dataset, select_indices(3, len(dataset)))  # the loader's uint8 images
    mean, std = datamodule.normalization()
    data = grid_data(model, batch, mean, std)
    batch["image"] = normalize_images(batch["image"], mean, std)  # what the network saw
    assert model.training  # restored
    assert data.probs.shape == (3, CLASSES)
    if zoom is None:
        assert data.attention is None and data.zoomed is None
    else:
        out = model.net.eval()(batch["image"], return_zoomed=True)
        assert torch.equal(data.boxes, out["boxes_image"])
        assert data.attention.shape == (3, 48, 48) and 0 <= float(data.attention.min()) <= float(data.attention.max()) <= 1
        if zoom["level"] == "image":
            assert torch.allclose(data.zoomed, out["zoomed"]) and data.zoomed.shape[-1] == 40
            assert data.zoom_note.startswith("zoomed input (slice bicubic, align_corners=true")
        else:  # the image crop of the same boxes, resized like the features were
            # whole cells map to a fractional image region where the cells sit off their pixel blocks
            expected = crop_resize(batch["image"], out["boxes_image"], size=(48, 48), mode="area")
            assert out["boxes_image"].is_floating_point() == (model.net.offset != (0.0, 0.0))
            assert torch.allclose(data.zoomed, expected) and "net zooms features" in data.zoom_note
    fig = grid_figure(data, datamodule.class_names, datamodule.transform_args["mean"], datamodule.transform_args["std"])
    assert sum(1 for ax in fig.axes if ax.images) == 3 * (1 if zoom is None else 2)
    assert _is_png(save_figure(fig, tmp_path / "grid.png"))


ZOOM_OPTIONS = {
    "feature-continuous-k2": {"level": "feature", "num_regions": 2},
    "image-continuous-area": {"level": "image", "mode": "area", "box": "moments"},
    "feature-affine-k2": {"level": "feature", "sampler": "affine", "num_regions": 2},  # grid_sample's old name
    "feature-affine-nearest": {"level": "feature", "sampler": "affine", "mode": "nearest", "box": "moments"},
    "feature-slice-k3-mass": {"level": "feature", "sampler": "slice", "num_regions": 3, "box": "mass"},
    "image-affine-k2-size": {"level": "image", "sampler": "affine", "mode": "bicubic", "num_regions": 2, "size": 40},
    "image-slice-k2": {"level": "image", "sampler": "slice", "num_regions": 2, "box": "moments"},
    "feature-learned-k2": {"level": "feature", "box": "learned", "num_regions": 2},
}


@pytest.mark.parametrize("zoom", list(ZOOM_OPTIONS.values()), ids=list(ZOOM_OPTIONS))
def test_grid_draws_every_region_and_float_boxes(zoom, datamodule, tmp_path):
    """k regions and float boxes: every box drawn (region 1 in the zoom colour), the zoomed panel the
    model's own k views (level=image, rows of the [B*k] batch) or the image crops with the model's sampler."""
    torch.manual_seed(0)
    model = FGVCModule(BACKBONE, CLASSES, datamodule.class_names, zoom=zoom)
    config = model.net.config
    dataset = datamodule.dataset("test")
    batch = dataset_batch(dataset, select_indices(3, len(dataset)))
    data = grid_data(model, batch, *datamodule.normalization())
    batch["image"] = normalize_images(batch["image"], *datamodule.normalization())
    out = model.net.eval()(batch["image"], return_zoomed=True)
    k = config.num_regions
    assert torch.equal(data.boxes, out["boxes_image"])
    # slice crops whole cells: integer image boxes, unless the cells sit off their pixel blocks (cell_offset)
    whole_pixels = config.sampler == "slice" and (config.level == "image" or model.net.offset == (0.0, 0.0))
    assert data.boxes.dtype == (torch.int64 if whole_pixels else torch.float32)
    assert data.boxes.shape == ((3, k, 4) if k > 1 else (3, 4))
    side = 40 if config.size else 48
    assert data.zoomed.shape == ((3, k, 3, side, side) if k > 1 else (3, 3, side, side))
    if config.level == "image":
        assert torch.allclose(data.zoomed.flatten(0, 1) if k > 1 else data.zoomed, out["zoomed"])
    else:
        images = batch["image"].repeat_interleave(k, dim=0)
        boxes = out["boxes_image"].reshape(-1, 4)
        if config.sampler == "grid_sample":
            expected = crop_affine(images, boxes, (48, 48), mode=config.mode, align_corners=config.align_corners)
        else:  # continuous (float boxes) or slice (whole cells)
            expected = crop_resize(images, boxes, size=(48, 48), mode=config.mode)
        assert torch.allclose(data.zoomed.reshape(expected.shape), expected, atol=1e-6)
    fig = grid_figure(data, datamodule.class_names, datamodule.transform_args["mean"],
                      datamodule.transform_args["std"], title="t")
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 3 * 2  # the image and one (mosaic) zoom panel per cell
    for cell in image_axes[::2]:
        zoom_frames = [p for p in cell.patches if p.get_edgecolor()[:3] != (0.0, 1.0, 0.0)]  # not the GT (lime)
        assert len(zoom_frames) == k
    first = image_axes[0].patches
    drawn = sorted(v for p in first if p.get_edgecolor()[:3] != (0.0, 1.0, 0.0)
                   for v in (p.get_x() + 0.5, p.get_y() + 0.5, p.get_width(), p.get_height()))
    regions = out["boxes_image"][0].reshape(-1, 4).double()
    expected_corners = sorted(torch.cat([regions[:, [1, 0]], regions[:, 3:4] - regions[:, 1:2],
                                         regions[:, 2:3] - regions[:, 0:1]], dim=1).flatten().tolist())
    assert drawn == pytest.approx(expected_corners, abs=1e-5)  # where the boxes are, fractions included
    if k > 1:
        assert len(image_axes[1].patches) == k  # each view framed in its box's colour
    assert _is_png(save_figure(fig, tmp_path / "grid.png"))[0] > 300


@pytest.mark.parametrize("zoom", [ZOOM_OPTIONS["feature-continuous-k2"], ZOOM_OPTIONS["feature-affine-k2"],
                                  ZOOM_OPTIONS["image-slice-k2"], ZOOM_OPTIONS["feature-learned-k2"], None],
                         ids=["continuous-k2", "affine-k2", "slice-k2", "learned-k2", "plain"])
def test_predict_step_tta_is_the_mean_of_its_views(zoom, datamodule):
    """``trainer.predict`` over ``predict_step`` with ``set_tta``: ``probs_tta`` is the mean of the views run one
    by one (image flipped, box threshold passed to the network); thresholds only for the threshold/moments
    rules; the boxes of k regions and the batch's index and labels come through."""
    torch.manual_seed(0)
    model = FGVCModule(BACKBONE, CLASSES, datamodule.class_names, zoom=zoom)
    views = tta_views(model, hflip=True, thresholds=[0.1, 0.9])
    rule = zoom is not None and model.net.config.box in ("threshold", "moments")
    assert views == ([(False, 0.1), (False, 0.9), (True, 0.1), (True, 0.9)] if rule else [(False, None), (True, None)])
    model.set_tta(views)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(datamodule.dataset("test"), [0, 4, 8]), batch_size=3,
                                         collate_fn=collate_uint8)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    outputs = trainer.predict(model, datamodule=LoaderDataModule(loader, *datamodule.normalization()))
    preds = gather_predictions(outputs)
    batch = next(iter(loader))
    batch["image"] = normalize_images(batch["image"], *datamodule.normalization())
    model.eval()
    with torch.inference_mode():
        runs = [model(batch["image"].flip(-1) if flip else batch["image"], **({} if t is None else {"threshold": t}))
                for flip, t in views]
        expected = torch.stack([run["logits"].softmax(-1) for run in runs]).mean(0)
        assert torch.allclose(preds.probs_tta, expected, atol=1e-6)
        assert torch.allclose(preds.probs, model(batch["image"])["logits"].softmax(-1), atol=1e-6)
        assert outputs[0]["loss"] == pytest.approx(float(model.criterion(model(batch["image"]), batch["label"])))
    if rule:  # the thresholds reach the boxes, so the views differ
        assert not torch.equal(runs[0]["boxes_image"], runs[1]["boxes_image"])
    assert torch.equal(preds.index, batch["index"]) and torch.equal(preds.labels, batch["label"])
    if zoom is None:
        assert preds.boxes is None
    else:
        k = model.net.config.num_regions
        assert preds.boxes.shape == (3, k, 4)
        assert preds.boxes.dtype == (torch.int64 if model.net.config.sampler == "slice" else torch.float32)
