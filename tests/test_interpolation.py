"""check_interpolation: accepts exactly what F.interpolate accepts, says so in one line, and crop_resize uses it;
interp_label: the one text of a setting, which the crop_resize bench table uses too."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
import torch.nn.functional as F

from fgzoom.bench.crop_resize_bench import format_table
from fgzoom.ops import MODES, check_interpolation, crop_resize, interp_label
from fgzoom.ops.crop_resize import METHODS
from fgzoom.ops.crop_resize import MODES as CROP_RESIZE_MODES
from fgzoom.ops.interpolation import ALIGN_CORNERS_MODES, ANTIALIAS_MODES, NEAREST_MODES, resize_spec

SETTINGS = list(itertools.product(MODES, (None, False, True), (False, True)))


def interpolate_accepts(mode, align_corners, antialias):
    try:
        F.interpolate(torch.zeros(1, 1, 4, 4), size=(3, 5), mode=mode, align_corners=align_corners,
                      antialias=antialias)
    except (ValueError, RuntimeError, NotImplementedError):
        return False
    return True


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_accepts_exactly_what_f_interpolate_accepts(setting):
    """The one rule, lanczos included: align_corners=False is accepted (F.interpolate's only lanczos geometry,
    the same as None; crop_resize matches the loop on it, test_crop_resize.mode_knobs), True rejected."""
    if interpolate_accepts(*setting):
        check_interpolation(*setting)
    else:
        with pytest.raises(ValueError):
            check_interpolation(*setting)


def test_mode_lists_are_consistent():
    assert CROP_RESIZE_MODES is MODES and METHODS[0] == "auto"
    assert set(ALIGN_CORNERS_MODES) <= set(MODES) and set(ANTIALIAS_MODES) <= set(MODES)
    assert set(NEAREST_MODES) <= set(MODES) and not set(NEAREST_MODES) & set(ALIGN_CORNERS_MODES)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (("lanczoz", None, False), "model.zoom.mode='lanczoz': must be one of ('nearest', "),
        (("nearest", False, False),
         "model.zoom.align_corners=False: mode=nearest does not take align_corners; leave it None (null in a "
         "config); it applies to ('bilinear', 'bicubic', 'lanczos')"),
        (("bilinear", 1.5, False), "model.zoom.align_corners=1.5: must be None, True or False"),
        (("lanczos", True, True), "model.zoom.align_corners=True: mode=lanczos has only the align_corners=False"),
        (("bicubic", None, "no"), "model.zoom.antialias='no': must be True or False"),
        (("area", None, True), "model.zoom.antialias=True: mode=area does not antialias; use one of ("),
        (("lanczos", None, False), "model.zoom.antialias=False: mode=lanczos requires antialias=True"),
    ],
)
def test_messages_start_with_the_prefixed_argument_and_value(setting, message):
    with pytest.raises(ValueError) as info:
        check_interpolation(*setting, prefix="model.zoom.")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("setting", [s for s in SETTINGS if not interpolate_accepts(*s)],
                         ids=lambda s: "-".join(map(str, s)))
def test_crop_resize_raises_the_validator_message(setting):
    with pytest.raises(ValueError) as expected:
        check_interpolation(*setting)
    mode, align_corners, antialias = setting
    with pytest.raises(ValueError, match=f"^{re.escape(str(expected.value))}$"):
        crop_resize(torch.zeros(1, 1, 4, 4), torch.tensor([[0, 0, 4, 4]]), size=2, mode=mode,
                       align_corners=align_corners, antialias=antialias)


def test_resize_spec_fills_the_defaults():
    spec = resize_spec("bicubic", size=5)
    assert (spec.mode, spec.align_corners, spec.antialias, spec.size, spec.scale_factor) == (
        "bicubic", False, False, (5, 5), None)
    assert resize_spec("nearest", scale_factor=(2, 0.5)).scale_factor == (2.0, 0.5)
    assert resize_spec("area", size=torch.Size([3, 4])).size == (3, 4)


def test_interp_label_names_only_the_knobs_that_are_set():
    assert interp_label("nearest") == interp_label("nearest", None, False) == "nearest"
    assert interp_label("bilinear", False) == "bilinear, align_corners=false"
    assert interp_label("bicubic", True, True) == "bicubic, align_corners=true, antialias"
    assert interp_label("lanczos", None, True) == "lanczos, antialias"


def test_crop_resize_bench_table_writes_each_setting_as_interp_label():
    row = {"shape": "2x3x8x8->8x8", "loop_ms": 2.0, "crop_resize_ms": 1.0, "speedup": 2.0, "method": "dense"}
    table = format_table([{**row, "mode": "bilinear", "knobs": {"align_corners": True, "antialias": False}},
                          {**row, "mode": "area", "knobs": {}}])
    assert "| 2x3x8x8->8x8 | bilinear, align_corners=true | 2.00 | 1.00 | 2.00x | dense |" in table
    assert "| 2x3x8x8->8x8 | area | 2.00 |" in table
