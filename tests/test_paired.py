"""Seed-paired comparisons of sweep settings (fgzoom.sweeps.paired): the t interval and the sign test."""

from __future__ import annotations

import warnings

import pytest

from fgzoom.sweeps.paired import paired_compare


def test_interval_and_sign_test_by_hand():
    a, b = {1: 0.50, 2: 0.60, 3: 0.70, 9: 0.1}, {1: 0.40, 2: 0.50, 3: 0.65, 4: 0.9}  # seeds 9 and 4 unpaired
    c = paired_compare(a, b)
    assert c.seeds == 3 and c.wins == 3 and c.losses == 0
    assert c.mean_diff == pytest.approx(0.25 / 3)
    half = 4.302652729911275 * 0.028867513459481294 / 3**0.5  # t(0.975, 2) * sd / sqrt(n)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.25 / 3 - half, 0.25 / 3 + half))
    assert c.sign_p == pytest.approx(0.25) and not c.within_noise


def test_a_difference_inside_the_seed_spread_is_noise():
    c = paired_compare({1: 0.5, 2: 0.7, 3: 0.6}, {1: 0.6, 2: 0.6, 3: 0.55})
    assert c.wins == 2 and c.losses == 1 and c.within_noise


def test_one_seed_has_no_interval_and_no_shared_seed_no_comparison():
    c = paired_compare({1: 0.5}, {1: 0.4, 2: 0.3})
    assert c.seeds == 1 and c.ci_low is None and c.within_noise
    assert paired_compare({1: 0.5}, {2: 0.5}) is None
    tie = paired_compare({1: 0.5, 2: 0.5}, {1: 0.5, 2: 0.5})
    assert tie.sign_p is None and tie.mean_diff == 0.0 and tie.within_noise


def test_other_confidence_levels_follow_the_t_quantile():
    a, b = {1: 0.50, 2: 0.60, 3: 0.70}, {1: 0.40, 2: 0.50, 3: 0.65}
    half = 2.9199855803537242 * 0.028867513459481294 / 3**0.5  # t(0.95, 2) * sd / sqrt(n)
    c = paired_compare(a, b, confidence=0.90)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.25 / 3 - half, 0.25 / 3 + half))


def test_the_same_gap_on_every_seed_is_a_zero_width_interval_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = paired_compare({1: 0.6, 2: 0.7, 3: 1.0}, {1: 0.5, 2: 0.6, 3: 0.9})
    assert c.ci_low == pytest.approx(0.1) and c.ci_high == pytest.approx(0.1) and not c.within_noise
