"""The interpolation ablation: the sweep launches only valid settings, summarize reads a sweep folder
(finished, failed and never-started jobs), and a tiny sweep runs end to end through both scripts."""

from __future__ import annotations

import csv
import json
import re
from itertools import product
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fgzoom.cli.runtime import resolved_container
from fgzoom.errors import ConfigError, SummaryError
from fgzoom.models.options import config_from
from fgzoom.models.zoom_config import BOX_RULES, LEVELS, ZoomConfig
from fgzoom.ops import MODES
from fgzoom.sweeps.expand import expand_sweep
from fgzoom.sweeps.plots import plot_labels
from fgzoom.sweeps.runs import INVALID, NO_METRICS, NOT_STARTED, OK, SettingSummary, collect_runs
from fgzoom.sweeps.summarize import summarize
from tests.helpers import CONFIGS, compose_config, run_script_here, tiny_overrides


def _sweep_params(experiment: str, tmp_path: Path) -> dict[str, str]:
    cfg = compose_config("train.yaml", [f"experiment={experiment}"], tmp_path)
    return dict(cfg.hydra.sweeper.params)


def _valid_settings() -> set[tuple]:
    """Every (level, sampler, mode, align_corners, antialias) the ablation should cover, by the model's own
    validation: each valid (level, mode, align_corners, antialias) of the default (continuous) sampler, with
    align_corners=False left out (the same setting as None in F.interpolate)."""
    settings = set()
    for level, mode, align_corners, antialias in product(LEVELS, MODES, (None, True), (False, True)):
        try:
            ZoomConfig(level=level, mode=mode, align_corners=align_corners, antialias=antialias)
        except ConfigError:
            continue
        settings.add((level, "continuous", mode, align_corners, antialias))
    return settings


def _job_settings(jobs: list[list[str]], tmp_path: Path) -> tuple[list, int]:
    """The (level, sampler, mode, align_corners, antialias) of every valid job, and how many jobs the config
    check refuses."""
    settings, refused = [], 0
    for job in jobs:
        cfg = compose_config("train.yaml", job, tmp_path)
        zoom = OmegaConf.to_container(cfg.model.zoom, resolve=True)
        try:
            config_from(ZoomConfig, zoom, "model.zoom")  # raises on an invalid combination
        except ConfigError:
            refused += 1
            continue
        settings.append((zoom["level"], zoom["sampler"], zoom["mode"], zoom["align_corners"], zoom["antialias"]))
    return settings, refused


def test_sweep_is_the_product_of_keys_whose_valid_jobs_are_every_setting(tmp_path):
    """experiment=ablate_interp: level x mode x align_corners x antialias x seed; the combinations the config
    check refuses are skipped by the jobs themselves (test_invalid_jobs_of_a_sweep_...), the others are each
    valid setting exactly once per seed."""
    params = _sweep_params("ablate_interp", tmp_path)
    jobs = expand_sweep(params, ["experiment=ablate_interp"])
    seeds = sorted({o.split("=", 1)[1] for job in jobs for o in job if o.startswith("seed=")})
    assert seeds == ["1", "2", "3"] and len(jobs) == 2 * 6 * 2 * 2 * 3
    one_seed = [job for job in jobs if "seed=1" in job]
    settings, refused = _job_settings(one_seed, tmp_path)
    assert len(settings) == len(set(settings)), "two jobs give the same setting"
    assert set(settings) == _valid_settings() and len(settings) == 24 and refused == 24


def test_plain_reference_runs_the_plain_model_with_the_ablation_seeds(tmp_path):
    params = _sweep_params("plain_reference", tmp_path)
    assert params == {"seed": "1,2,3"}
    cfg = compose_config("train.yaml", ["experiment=plain_reference"], tmp_path)
    interp = compose_config("train.yaml", ["experiment=ablate_interp"], tmp_path)
    assert cfg.model.zoom is None and cfg.task_name == "plain_reference"
    assert cfg.hydra.launcher == interp.hydra.launcher and cfg.data.num_workers == 0
    assert resolved_container(cfg)["callbacks"] == resolved_container(interp)["callbacks"]


def test_box_sweep_runs_each_rule_with_each_sampler_plus_learned_boxes(tmp_path):
    """experiment=ablate_boxes: threshold, mass, moments x slice, affine, plus learned (affine only), every
    setting with every seed; apart from box and sampler only each rule's own parameters differ (the
    threshold_slice reference row keeps the zoom's earlier threshold, padding and min_size)."""
    params = _sweep_params("ablate_boxes", tmp_path)
    jobs = expand_sweep(params, ["experiment=ablate_boxes"])
    models = sorted({o.split("=", 1)[1] for job in jobs for o in job if o.startswith("model=")})
    seeds = sorted({o.split("=", 1)[1] for job in jobs for o in job if o.startswith("seed=")})
    assert seeds == ["1", "2", "3"] and len(jobs) == len(models) * len(seeds) == 7 * 3
    settings, others = [], []
    for model in models:
        cfg = compose_config("train.yaml", ["experiment=ablate_boxes", f"model={model}"], tmp_path)
        zoom = OmegaConf.to_container(cfg.model.zoom, resolve=True)
        config_from(ZoomConfig, zoom, "model.zoom")
        settings.append((zoom.pop("box"), zoom.pop("sampler")))
        for key in ("threshold", "threshold_range", "mass", "padding", "min_size"):
            zoom.pop(key)
        others.append(zoom)
    rules = [r for r in BOX_RULES if r not in ("glimpse", "learned", "ranked")]  # the measured table's rules
    assert sorted(settings) == sorted([*product(rules, ("slice", "affine")), ("learned", "affine")])
    assert all(other == others[0] for other in others)  # only box and sampler differ
    assert cfg.task_name == "ablate_boxes" and cfg.hydra.launcher._target_.endswith("joblib_launcher.JoblibLauncher")


def test_command_line_sweep_replaces_the_experiment_sweep(tmp_path):
    params = _sweep_params("ablate_interp", tmp_path)
    jobs = expand_sweep(params, ["experiment=ablate_interp", "model.zoom.level=image", "model.zoom.mode=area,bilinear",
                                 "model.zoom.align_corners=null", "model.zoom.antialias=false", "seed=7,8"])
    assert [sorted(job) for job in jobs] == [
        sorted(["experiment=ablate_interp", "model.zoom.level=image", f"model.zoom.mode={m}",
                "model.zoom.align_corners=null", "model.zoom.antialias=False", f"seed={s}"])  # as Hydra renders it
        for m, s in product(["area", "bilinear"], [7, 8])
    ]


def test_slurm_variant_runs_the_same_sweep_through_submitit(tmp_path):
    cfg = compose_config(
        "train.yaml", ["experiment=ablate_interp_slurm", "hydra.launcher.partition=gpu"], tmp_path
    )
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu"
    assert cfg.hydra.launcher.gpus_per_node == 1
    assert cfg.data.num_workers == cfg.hydra.launcher.cpus_per_task
    assert dict(cfg.hydra.sweeper.params) == _sweep_params("ablate_interp", tmp_path)
    local = compose_config("train.yaml", ["experiment=ablate_interp"], tmp_path)
    assert local.hydra.launcher._target_.endswith("joblib_launcher.JoblibLauncher")
    assert local.hydra.launcher.n_jobs == 2


def _job(sweep: Path, num: int, model: str, seed: int, zoom: dict | None, metrics: dict | None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create(["experiment=ablate_interp", f"model={model}", f"seed={seed}"]),
        job / ".hydra" / "overrides.yaml",
    )
    OmegaConf.save(OmegaConf.create({"seed": seed, "model": {"zoom": zoom}}), job / "config.yaml")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def _metrics(acc: float) -> dict:
    return {"val/acc": acc, "test/acc": acc - 0.1, "val/acc_macro": acc, "test/acc_macro": acc - 0.1}


@pytest.fixture
def hand_made_sweep(tmp_path) -> Path:
    """plain x seeds 1,2 (both finished), bilinear x seeds 1,2 (seed 1 finished, seed 2 failed), and
    nearest x seeds 1,2 listed in multirun.yaml but never started."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    OmegaConf.save(
        OmegaConf.create(
            {
                "hydra": {
                    "sweeper": {
                        "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                        "params": {
                            "model": "plain, interp/feature/bilinear, interp/feature/nearest",
                            "seed": "1,2",
                        },
                    },
                    "overrides": {"task": ["experiment=ablate_interp"]},
                }
            }
        ),
        sweep / "multirun.yaml",
    )
    bilinear = {"level": "feature", "mode": "bilinear", "align_corners": None, "antialias": False}
    _job(sweep, 0, "plain", 1, None, _metrics(0.5))
    _job(sweep, 1, "plain", 2, None, _metrics(0.7))
    _job(sweep, 2, "interp/feature/bilinear", 1, bilinear, {**_metrics(0.9), "val/acc_zoom": 0.8})
    _job(sweep, 3, "interp/feature/bilinear", 2, bilinear, None)  # crashed: no metrics.json
    return sweep


def test_collect_runs_finds_finished_failed_and_never_started_jobs(hand_made_sweep):
    runs = collect_runs(hand_made_sweep)
    status = {r.job: r.status for r in runs}
    assert status == {"0": OK, "1": OK, "2": OK, "3": NO_METRICS, "#4": NOT_STARTED, "#5": NOT_STARTED}
    assert {r.seed for r in runs if r.status == NOT_STARTED} == {1, 2}
    assert all(r.other == "" for r in runs)


def test_summarize_hand_made_sweep(hand_made_sweep, tmp_path):
    paths = summarize(hand_made_sweep, tmp_path / "out")
    assert paths["png"].stat().st_size > 0

    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "#4", "#5"]
    assert rows[0]["model"] == "plain" and rows[0]["seed"] == "1" and float(rows[0]["val/acc"]) == 0.5
    assert (
        rows[2]["mode"] == "bilinear" and rows[2]["level"] == "feature" and rows[2]["val/acc_zoom"] == "0.8"
    )
    assert rows[3]["status"] == NO_METRICS and rows[3]["val/acc"] == ""

    md = paths["md"].read_text()
    table, rest = md.split("## Paired comparisons")
    paired, failed = rest.split("## Failed or unfinished runs")
    # test/acc per seed: plain 0.4, 0.6; bilinear 0.8 (seed 1 only) -> one seed to pair, no interval
    assert "| feature | slice | bilinear | 1 | 80.0 | 80.0 | 90.0 | +40.0, 1/0, noise | **best by val/acc** |" in paired
    assert "| plain (no zoom) | – | – | 2 | 40.0 / 60.0 | 50.0 ± 14.1 | 60.0 ± 14.1 | – | -40.0, 0/1, n=1, noise |" in paired
    assert "step x plain" not in paired  # no step bench given
    setting_rows = [line for line in table.splitlines() if line.startswith("| ") and "rank" not in line]
    assert len(setting_rows) == 2  # plain, feature/bilinear; the never-started nearest has no config
    plain = next(line for line in setting_rows if "| plain |" in line)
    assert "| 2 | 60.0 ± 14.1 | 50.0 ± 14.1 |" in plain  # seeds, val/acc, test/acc (mean ± std, %)
    bilinear = next(line for line in setting_rows if "bilinear" in line)
    assert bilinear.startswith("| **1 (best)** |") and "| 1 | 90.0 | 80.0 |" in bilinear
    assert "Best setting by mean val/acc: **feature / bilinear**" in table
    assert "| 3 | no metrics.json | feature / bilinear | 2 |" in failed
    assert "| #4 | not started |" in failed and "model=interp/feature/nearest" in failed


def test_summarize_marks_other_varying_overrides(tmp_path):
    sweep = tmp_path / "sweep"
    zoom = {"level": "feature", "mode": "area", "align_corners": None, "antialias": False}
    for num, stage in enumerate((2, 3)):
        _job(sweep, num, "interp/feature/area", 1, zoom, _metrics(0.5 + 0.1 * num))
        overrides = sweep / str(num) / ".hydra" / "overrides.yaml"
        OmegaConf.save(OmegaConf.create([*OmegaConf.load(overrides), f"model.zoom.stage={stage}"]), overrides)
    md = summarize(sweep)["md"].read_text()
    assert "model.zoom.stage=2" in md and "model.zoom.stage=3" in md  # two settings, not averaged


def test_summarize_flags_config_differences_the_sweep_does_not_explain(hand_made_sweep):
    config = hand_made_sweep / "1" / "config.yaml"  # plain, seed 2: as if a file changed mid-sweep
    OmegaConf.save(
        OmegaConf.merge(OmegaConf.load(config), {"model": {"backbone": {"name": "resnet10t"}}}), config
    )
    md = summarize(hand_made_sweep)["md"].read_text()
    assert "**Warning:** the run configs differ in 1 key(s)" in md
    assert "- `model.backbone.name`: `<missing>` in job(s) 0, 2, 3; `resnet10t` in job(s) 1" in md


def test_summarize_does_not_flag_where_the_checkout_ran_or_what_a_group_choice_sets(hand_made_sweep):
    """paths.* and paths under the checkout say where a job ran (a second clone of the repository), not what
    it ran; a key that differs only between runs of different group choices (model=plain against
    model=interp/...) is the group's doing: no warning. The same key differing within one choice is flagged."""
    for job, root in (("0", "/one/clone"), ("1", "/another/clone"), ("2", "/one/clone"), ("3", "/another/clone")):
        config = hand_made_sweep / job / "config.yaml"
        moved = {"paths": {"root_dir": root, "data_dir": f"{root}/data"}, "data": {"root": f"{root}/data/x"},
                 "task_name": "plain_reference" if job in ("0", "1") else "ablate_interp"}
        OmegaConf.save(OmegaConf.merge(OmegaConf.load(config), moved), config)
    md = summarize(hand_made_sweep)["md"].read_text()
    assert "Warning" not in md and "Config differences" not in md
    config = hand_made_sweep / "1" / "config.yaml"
    OmegaConf.save(OmegaConf.merge(OmegaConf.load(config), {"task_name": "edited"}), config)
    md = summarize(hand_made_sweep)["md"].read_text()
    assert "- `task_name`: " in md and "Config differences" in md


def test_summarize_cli_reports_a_missing_folder_in_one_line(tmp_path):
    result = run_script_here("summarize.py", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(SummaryError, match="no job folders"):
        summarize(tmp_path)


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path, synthetic_root):
    sweep = tmp_path / "sweep"
    result = run_script_here(
        "train.py",
        "-m",
        "experiment=ablate_interp",
        "hydra/launcher=basic",
        "model.zoom.level=feature",
        "model.zoom.mode=nearest",
        "model.zoom.align_corners=null,true",  # true with nearest: refused in one line, the sweep runs on
        "model.zoom.antialias=false",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
        *tiny_overrides(synthetic_root),
        "trainer.limit_train_batches=2",
        "++figures_every_n_epochs=0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for num in range(2):  # align_corners=null: trained
        assert (sweep / str(num) / "metrics.json").is_file()
        assert (sweep / str(num) / "config.yaml").is_file()
    for num in range(2, 4):  # align_corners=true with nearest: refused in one line, recorded, no training
        assert not (sweep / str(num) / "metrics.json").exists()
        assert "align_corners" in (sweep / str(num) / "invalid.txt").read_text()
    plain = tmp_path / "plain"
    result = run_script_here("train.py", "-m", "experiment=plain_reference", "hydra/launcher=basic", "seed=1,2",
                             f"hydra.sweep.dir={plain}", *tiny_overrides(synthetic_root),
                             "trainer.limit_train_batches=2", "++figures_every_n_epochs=0")
    assert result.returncode == 0, result.stderr[-3000:]

    result = run_script_here("summarize.py", str(sweep), str(plain), "--out", str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {OK}
    assert sorted((r["model"], r["mode"], r["seed"]) for r in rows) == [
        ("plain", "", "1"),
        ("plain", "", "2"),
        ("zoom", "nearest", "1"),
        ("zoom", "nearest", "2"),
    ]
    md = (sweep / "results.md").read_text()
    assert "4 of 4 runs finished (2 more jobs were combinations of the swept keys" in md
    ranking, paired = md.split("## Failed or unfinished runs")[0].split("## Paired comparisons")

    def rows(section: str) -> list[str]:
        return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| rank")
                and not line.startswith("| level")]

    assert len(rows(ranking)) == 2 and "(best)" in ranking  # one row per setting: plain, zoom nearest
    assert len(rows(paired)) == 2 and "best by val/acc" in paired
    assert (sweep / "results.png").stat().st_size > 0


def test_invalid_jobs_of_a_sweep_stop_in_one_line_and_the_sweep_runs_on(tmp_path, synthetic_root):
    """A product of keys holds combinations F.interpolate does not take: each such job prints one error
    line, leaves invalid.txt and returns; the sweep exits 0; summarize says there is nothing to summarize."""
    sweep = tmp_path / "sweep"
    result = run_script_here("train.py", "-m", "experiment=ablate_interp", "hydra/launcher=basic",
                             "model.zoom.level=feature", "model.zoom.mode=nearest,area",
                             "model.zoom.align_corners=true", "model.zoom.antialias=false", "seed=1",
                             f"hydra.sweep.dir={sweep}", *tiny_overrides(synthetic_root))
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all("model.zoom.align_corners=True" in e for e in errors), errors
    assert all((sweep / str(n) / "invalid.txt").is_file() for n in range(2))
    assert collect_runs(sweep)[0].status == INVALID
    with pytest.raises(SummaryError, match="every job is an invalid setting"):
        summarize(sweep)


def test_fine_detail_experiment_compares_plain_and_image_zoom_on_the_same_view(tmp_path):
    """experiment=fine_detail: the two models differ only in the zoom; both see the 96 px view of the
    192 px shape_stripes set, and the zoom crops at level=image."""
    params = _sweep_params("fine_detail", tmp_path)
    jobs = expand_sweep(params, ["experiment=fine_detail"])
    assert len(jobs) == 2 * 3
    cfgs = {
        model: compose_config("train.yaml", ["experiment=fine_detail", f"model={model}"], tmp_path)
        for model in ("plain", "zoom_image")
    }
    plain, zoom = (resolved_container(c) for c in cfgs.values())
    assert plain["model"]["zoom"] is None and zoom["model"]["zoom"]["level"] == "image"
    for cfg in (plain, zoom):
        assert cfg["model"]["input_size"] == 96 and cfg["data"]["image_size"] == 192
        assert cfg["data"]["reader_options"]["synthetic"]["class_set"] == "shape_stripes"
    without_zoom = {k: v for k, v in zoom["model"].items() if k != "zoom"}
    assert without_zoom == {k: v for k, v in plain["model"].items() if k != "zoom"}
    for key in ("data", "trainer", "seed"):
        assert plain[key] == zoom[key]


def _tables(md: Path) -> str:
    """A results .md without its title line (the title names the source)."""
    return md.read_text().split("\n", 1)[1]


def test_summarize_redraws_tables_and_plot_from_a_results_csv(hand_made_sweep, tmp_path):
    """A results.csv committed without its sweep folder gives the same tables (docs/ keeps only CSVs)."""
    first = summarize(hand_made_sweep, tmp_path / "out")
    kept = tmp_path / "docs" / "ablation_x.csv"
    kept.parent.mkdir()
    kept.write_bytes(first["csv"].read_bytes())
    again = summarize(kept)
    assert set(again) == {"md", "png"} and again["md"] == kept.with_suffix(".md") and again["png"].stat().st_size
    assert _tables(again["md"]) == _tables(first["md"])
    assert kept.read_bytes() == first["csv"].read_bytes()  # the input is not rewritten
    result = run_script_here("summarize.py", str(tmp_path / "missing.csv"))
    assert result.returncode == 2 and result.stderr.startswith("error: ")


def test_fine_detail_interp_sweep_runs_the_interp_settings_on_the_fine_detail_view(tmp_path):
    """experiment=ablate_interp_fine: ablate_interp's settings and seeds, fine_detail's data, view and
    budget, ablate_interp's parallel launcher and quiet callbacks."""
    assert _sweep_params("ablate_interp_fine", tmp_path) == {"model": "zoom", **_sweep_params("ablate_interp", tmp_path)}
    cfg = compose_config("train.yaml", ["experiment=ablate_interp_fine"], tmp_path)
    fine = resolved_container(cfg)
    detail = resolved_container(compose_config("train.yaml", ["experiment=fine_detail"], tmp_path))
    interp = resolved_container(compose_config("train.yaml", ["experiment=ablate_interp"], tmp_path))
    assert fine["model"]["input_size"] == 96 and fine["trainer"]["max_epochs"] == detail["trainer"]["max_epochs"]
    assert {k: v for k, v in fine["data"].items() if k != "num_workers"} == {
        k: v for k, v in detail["data"].items() if k != "num_workers"
    }
    assert fine["data"]["num_workers"] == interp["data"]["num_workers"] == 0
    assert fine["callbacks"] == interp["callbacks"] and fine["task_name"] == "ablate_interp_fine"
    assert cfg.hydra.launcher._target_.endswith("joblib_launcher.JoblibLauncher")


def test_summarize_merges_a_sweep_run_in_parts(hand_made_sweep, tmp_path):
    """A sweep finished in two parts (two machines or sessions): the first part kept only as a results.csv
    under docs/, the second a folder with the jobs the first missed. Merged by overrides: the finished
    run of a job wins over a failed or never-started one; the csv under docs/ is rewritten with the union."""
    docs = tmp_path / "docs"
    first = summarize(hand_made_sweep, docs, name="ablation_x")
    assert first["csv"] == docs / "ablation_x.csv"
    rest = tmp_path / "rest"
    nearest = {"level": "feature", "mode": "nearest", "align_corners": None, "antialias": False}
    bilinear = {"level": "feature", "mode": "bilinear", "align_corners": None, "antialias": False}
    _job(rest, 0, "interp/feature/bilinear", 2, bilinear, _metrics(0.8))  # the crashed job, rerun
    _job(rest, 1, "interp/feature/nearest", 1, nearest, _metrics(0.6))
    _job(rest, 2, "plain", 1, None, _metrics(0.5))  # rerun of a finished job: the first source's is kept

    result = run_script_here("summarize.py", str(first["csv"]), str(rest), "--out", str(docs), "--name", "ablation_x")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((docs / "ablation_x.csv").open()))
    status = {(next(o for o in r["overrides"].split() if o.startswith("model=")), r["seed"]): r["status"] for r in rows}
    assert status == {
        ("model=plain", "1"): OK,
        ("model=plain", "2"): OK,
        ("model=interp/feature/bilinear", "1"): OK,
        ("model=interp/feature/bilinear", "2"): OK,
        ("model=interp/feature/nearest", "1"): OK,
        ("model=interp/feature/nearest", "2"): NOT_STARTED,
    }
    md = (docs / "ablation_x.md").read_text()
    bilinear_row = next(line for line in md.splitlines() if line.startswith("| ") and "| bilinear |" in line)
    assert "| 2 | 85.0 ± 7.1 | 75.0 ± 7.1 |" in bilinear_row  # seeds 1 (0.9) and 2 (0.8) together
    assert "| #5 | not started |" in md.split("## Failed or unfinished runs")[1]
    assert (docs / "ablation_x.png").stat().st_size > 0
    assert all(r["other"] == "" for r in rows)  # the parts ran the same experiment: nothing else varies


@pytest.mark.slow  # composes every sweep setting and builds each model (8 s)
def test_step_bench_interp_rows_are_the_sweep_settings_as_composed(tmp_path):
    """bench.py step --interp: plain plus one row per valid zoom setting of experiment=ablate_interp, each the
    zoom config its job composes, named as summarize looks it up; a tiny bench of two rows runs."""
    from fgzoom.bench.step_bench import bench_train_step, interp_variants
    from fgzoom.sweeps.runs import setting_of
    from fgzoom.sweeps.step_cost import bench_name

    variants = interp_variants(CONFIGS)
    jobs = [job for job in expand_sweep(_sweep_params("ablate_interp", tmp_path), []) if "seed=1" in job]
    composed = []
    for job in jobs:
        cfg = resolved_container(compose_config("train.yaml", [o for o in job if not o.startswith("seed=")], tmp_path))
        zoom = {k: v for k, v in cfg["model"]["zoom"].items() if not k.startswith("_")}
        try:
            config_from(ZoomConfig, zoom, "model.zoom")
        except ConfigError:
            continue
        composed.append((bench_name(setting_of(cfg)), zoom))
    assert [(v["name"], v["zoom"]) for v in variants] == [("plain", None), *composed]
    assert len(variants) == 1 + 24
    rows = bench_train_step(backbone="resnet10t", image_size=32, batch_size=2, repeats=1, warmup=1,
                            variants=[variants[0], variants[-1]], num_classes=3)
    assert [r["name"] for r in rows] == ["plain", variants[-1]["name"]] and rows[1]["step_ms"] > 0
    # fine_detail's shape: a 64 px batch seen by the backbone at 32 px (model.input_size)
    rows = bench_train_step(backbone="resnet10t", image_size=64, input_size=32, batch_size=2, repeats=1,
                            warmup=1, variants=[variants[0], variants[-1]], num_classes=3)
    assert rows[1]["step_ms"] > 0


def test_plot_gives_each_setting_of_a_level_its_own_bar(tmp_path):
    """Settings that differ only in the sampler (or box rule, or region count) are labelled apart, so no bar
    hides another; a sweep of one sampler keeps the short mode labels; the interpolation is interp_label's."""
    def summary(**setting):
        full = {"model": "zoom", "level": "feature", "mode": "bilinear", "align_corners": None,
                "antialias": False, "sampler": "slice", "box": "moments", "num_regions": 1, **setting}
        return SettingSummary(setting=full, other="", runs=[])

    both = [summary(), summary(sampler="affine"), summary(mode="nearest"), summary(level="image", sampler="affine")]
    assert plot_labels(both) == ["slice bilinear", "affine bilinear", "slice nearest", "affine bilinear"]
    assert plot_labels([summary(), summary(mode="nearest")]) == ["bilinear", "nearest"]
    assert plot_labels([summary(), summary(num_regions=2)]) == ["bilinear k=1", "bilinear k=2"]
    # the interpolation reads as fgzoom.ops.interp_label writes it, in the plot as in the tables' labels
    knobs = summary(mode="bicubic", align_corners=True, antialias=True)
    assert plot_labels([summary(), knobs]) == ["bilinear", "bicubic, align_corners=true, antialias"]
    assert knobs.label == "feature / bicubic, align_corners=true, antialias / moments slice"


def test_summarize_adds_the_step_cost_of_each_setting_from_a_step_bench(hand_made_sweep, tmp_path):
    """--step-bench: each setting's row gets its `bench.py step --interp` ratio (matched by its model=
    option), a setting the bench lacks gets "–", and the caption names the file and what it measured; a
    file that is not a step bench is one line."""
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({
        "machine": "test cpu", "args": {"backbone": "resnet10t", "image_size": 64, "batch_size": 8},
        "step": [{"name": "plain", "ratio": 1.0}, {"name": "zoom feature bilinear", "ratio": 1.375}],
    }))
    md = summarize(hand_made_sweep, tmp_path / "out", step_bench=bench)["md"].read_text()
    paired = md.split("## Paired comparisons")[1].split("## Failed")[0]
    assert f"from `{bench}` (resnet10t, 64 px, batch 8, test cpu)" in paired
    assert "| +40.0, 1/0, noise | **best by val/acc** | 1.38 |" in paired
    assert "| – | -40.0, 0/1, n=1, noise | 1.00 |" in paired
    (tmp_path / "bad.json").write_text("{}")
    result = run_script_here("summarize.py", str(hand_made_sweep), "--step-bench", str(tmp_path / "bad.json"))
    assert result.returncode == 2 and "bad.json: not a step bench JSON" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kept", sorted((CONFIGS.parent / "docs").glob("ablation_*.csv")), ids=lambda p: p.name)
def test_committed_ablation_results_redraw_as_committed(kept, tmp_path):
    """Every results csv under docs/ redraws into the tables committed beside it: `python
    scripts/summarize.py docs/<name>.csv [--step-bench <the json its caption names>]` gives the same .md,
    apart from the title line."""
    root = CONFIGS.parent
    committed = kept.with_suffix(".md").read_text()
    step = re.search(r"from `(docs/bench_[^`]+\.json)`", committed)
    redrawn = summarize(kept, tmp_path, step_bench=root / step.group(1) if step else None)
    redrawn_text = redrawn["md"].read_text().replace(str(root / "docs"), "docs")
    assert redrawn_text.split("\n", 1)[1] == _tables(kept.with_suffix(".md"))
    assert redrawn["png"].stat().st_size > 0
