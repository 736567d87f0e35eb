"""experiment=ablate_components: one sweep of plain, bap, the zoom model and its variants (attention drop, each
fusion) over seeds, composed without training; and scripts/summarize.py on such a sweep: the rows in order, each
labelled, with the paired comparisons against plain and against bap (what the crop adds)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fgzoom.cli.runtime import resolved_container
from fgzoom.models.options import config_from
from fgzoom.models.zoom_config import FUSIONS, ZoomConfig
from fgzoom.sweeps.expand import expand_sweep
from fgzoom.sweeps.plots import plot_labels
from fgzoom.sweeps.runs import FUSION_ORDER, collect_runs, group_by_setting, setting_of
from fgzoom.sweeps.summarize import summarize
from fgzoom.sweeps.tables import read_csv
from tests.helpers import compose_config

COMPONENTS = {  # model option -> (model, fusion, drop) as summarize reads it from the run config
    "plain": ("plain", None, None),
    "bap": ("bap", None, 0.0),
    "zoom": ("zoom", "mean_prob", 0.0),
    "components/zoom_drop": ("zoom", "mean_prob", 1.0),
    "components/fuse_raw": ("zoom", "raw", 0.0),
    "components/fuse_zoom": ("zoom", "zoom", 0.0),
}


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_experiment_runs_six_components_with_three_seeds_each(tmp_path):
    cfg = compose_config("train.yaml", ["experiment=ablate_components"], tmp_path)
    assert cfg.task_name == "ablate_components" and cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    jobs = expand_sweep(dict(cfg.hydra.sweeper.params), ["experiment=ablate_components"])
    assert len(jobs) == 6 * 3
    settings = sorted(o for job in jobs for o in job if o.startswith(("model=", "seed=")))
    assert settings == sorted([*(f"model={m}" for m in COMPONENTS for _ in range(3)),
                               *(f"seed={s}" for _ in COMPONENTS for s in (1, 2, 3))])
    assert len({tuple(sorted(job)) for job in jobs}) == 18  # every (model, seed) once

    configs = {}
    for job in (j for j in jobs if "seed=1" in j):
        run = resolved_container(compose_config("train.yaml", job, tmp_path))
        choice = next(o.split("=", 1)[1] for o in job if o.startswith("model="))
        setting = setting_of(run)
        assert (setting["model"], setting["fusion"], setting["drop"]) == COMPONENTS[choice], choice
        if run["model"]["zoom"] is not None:  # every setting passes the zoom's own check
            config_from(ZoomConfig, {k: v for k, v in run["model"]["zoom"].items() if not k.startswith("_")},
                        "model.zoom")
        configs[choice] = _flat(run["model"])
    zoom = configs["zoom"]
    differs = {choice: {k for k in zoom.keys() | flat.keys() if flat.get(k) != zoom.get(k)}
               for choice, flat in configs.items()}
    # each variant changes its component only; plain has no zoom node at all
    assert differs["bap"] == {"zoom.crop", "zoom.fusion"}
    assert differs["components/zoom_drop"] == {"loss.drop"}
    assert differs["components/fuse_raw"] == differs["components/fuse_zoom"] == {"zoom.fusion"}
    assert all(k.startswith("zoom") for k in differs["plain"])


def test_fusion_order_lists_every_fusion():
    assert FUSION_ORDER == FUSIONS  # written out in fgzoom.sweeps.runs so that summarize needs no timm


def _job(sweep: Path, num: int, choice: str, seed: int, acc: float) -> None:
    """A finished job of experiment=ablate_components: overrides, the run config's model and metrics."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["experiment=ablate_components", f"model={choice}", f"seed={seed}"]),
                   job / ".hydra" / "overrides.yaml")
    model, fusion, drop = COMPONENTS[choice]
    zoom = None if model == "plain" else {
        "level": "feature", "mode": "bilinear", "align_corners": None, "antialias": False, "sampler": "continuous",
        "box": "moments", "num_regions": 1, "fusion": fusion or "raw", "crop": model == "zoom"}
    config = {"seed": seed, "model": {"zoom": zoom, "loss": {"drop": 0.0 if drop is None else drop}}}
    OmegaConf.save(OmegaConf.create(config), job / "config.yaml")
    metrics = {"val/acc": acc + 0.05, "test/acc": acc, "val/acc_raw": acc, "test/acc_raw": acc}
    (job / "metrics.json").write_text(json.dumps(metrics))


# test/acc per seed: plain 50/52/54, bap 70/72/74, zoom 80/82/84 (+10 over bap on every seed), zoom_drop
# 81/83/85 (the best by val/acc), fuse_raw 75/76/77, fuse_zoom 78/80/82
ACC = {"plain": 0.50, "bap": 0.70, "zoom": 0.80, "components/zoom_drop": 0.81, "components/fuse_raw": 0.75,
       "components/fuse_zoom": 0.78}
STEP = {"components/fuse_raw": 0.01}  # 0.02 for the others


@pytest.fixture
def component_sweep(tmp_path) -> Path:
    """experiment=ablate_components by hand: every component x seeds 1-3 finished, jobs in the sweep's order."""
    sweep = tmp_path / "sweep"
    num = 0
    for choice in reversed(list(COMPONENTS)):  # folders in another order than the table's
        for seed in (1, 2, 3):
            _job(sweep, num, choice, seed, ACC[choice] + STEP.get(choice, 0.02) * (seed - 1))
            num += 1
    return sweep


def test_summarize_orders_and_labels_the_components(component_sweep, tmp_path):
    summaries = group_by_setting(collect_runs(component_sweep))
    assert [s.label for s in summaries] == [
        "plain", "bap (no crop)", "feature / bilinear / moments continuous",
        "feature / bilinear / moments continuous + drop", "feature / bilinear / moments continuous fusion=raw",
        "feature / bilinear / moments continuous fusion=zoom",
    ]
    assert all(len(s.finished) == 3 for s in summaries)
    assert plot_labels(summaries[1:]) == ["bap (no crop)", "bilinear", "bilinear + drop", "bilinear fusion=raw",
                                          "bilinear fusion=zoom"]  # bap's missing sampler is no varying sampler

    paths = summarize(component_sweep, tmp_path / "out")
    md = paths["md"].read_text()
    table, rest = md.split("## Paired comparisons")
    paired = rest.split("## Failed or unfinished runs")[0]
    assert "| rank | model | level | mode | align_corners | antialias | sampler | box | num_regions | fusion | drop |" in table
    assert "| bap | – | – | – | – | – | moments | 1 | – | 0.0 |" in table
    header = next(line for line in paired.splitlines() if line.startswith("| level |"))
    assert header.startswith("| level | sampler | mode | fusion | drop | seeds |")
    assert "| vs plain (points, 95% CI) | vs bap (points, 95% CI) | vs best (points, 95% CI) |" in header
    rows = [line for line in paired.splitlines() if line.startswith("| ") and line is not header][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| plain (no zoom)", "| bap (no crop)", *["| feature"] * 4]
    plain, bap, zoom, drop = rows[:4]
    assert plain.endswith("| – | -20.0 [-20.0, -20.0], 0/3, **worse** | -31.0 [-31.0, -31.0], 0/3, **worse** |")
    assert "| +20.0 [+20.0, +20.0], 3/0, **better** | – |" in bap  # bap vs plain: the head
    # zoom minus bap: the crop's own contribution, +10 points on every seed (a zero-width interval)
    assert "| mean_prob | 0.0 | 3 | 80.0 / 82.0 / 84.0 |" in zoom and "| +10.0 [+10.0, +10.0], 3/0, **better** |" in zoom
    assert "| mean_prob | 1.0 |" in drop and drop.endswith("| **best by val/acc** |")
    assert "`bap (no crop)`, the zoom model without the crop" in paired

    # the csv keeps the components, and redraws the same tables without the sweep folder
    rows = list(csv.DictReader(paths["csv"].open()))
    assert {(r["model"], r["fusion"], r["drop"]) for r in rows} == {
        ("plain", "", ""), ("bap", "", "0.0"), ("zoom", "mean_prob", "0.0"), ("zoom", "mean_prob", "1.0"),
        ("zoom", "raw", "0.0"), ("zoom", "zoom", "0.0")}
    redrawn = summarize(paths["csv"], tmp_path / "redrawn")
    assert redrawn["md"].read_text().split("\n", 1)[1] == md.split("\n", 1)[1]


def test_a_csv_from_before_the_component_columns_reads_as_the_default_components(tmp_path):
    """Committed csv files have no fusion/drop columns: their zoom runs are the default components, so they merge
    with a sweep folder of the same jobs into one row per setting."""
    path = tmp_path / "old.csv"
    path.write_text("job,status,model,level,mode,align_corners,antialias,sampler,box,num_regions,seed,other,"
                    "overrides,dir,test/acc\n"
                    "0,ok,zoom,feature,bilinear,,false,slice,threshold,1,1,,model=zoom seed=1,,0.5\n"
                    "1,ok,plain,,,,,,,,1,,model=plain seed=1,,0.4\n")
    zoom, plain = read_csv(path)
    assert (zoom.setting["fusion"], zoom.setting["drop"]) == ("mean_prob", 0.0)
    assert (plain.setting["fusion"], plain.setting["drop"]) == (None, None)
