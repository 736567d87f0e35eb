"""Seed-paired comparison of two settings of a sweep: is a difference larger than the seed noise?

Two settings run with the same seeds share the data order, the augmentation draws and (where the networks
agree) the initial weights, so the per-seed difference ``a - b`` removes much of the variation both share.
The comparison reports the mean difference, its Student-t confidence interval over the seeds both settings
finished (scipy's paired t-test, ``stats.ttest_rel(a, b).confidence_interval``), and the exact two-sided sign
test (``stats.binomtest``). A difference whose interval contains 0 is *within noise*.
With 3 seeds the sign test cannot go below p = 0.25; the interval is what tells.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` over the seeds both finished.

    Attributes:
        seeds: how many seeds both settings finished.
        mean_diff: mean of the per-seed differences.
        ci_low, ci_high: the confidence interval of ``mean_diff`` (None with fewer than 2 seeds).
        wins, losses: seeds where ``a > b`` and ``a < b`` (ties are neither).
        sign_p: two-sided exact sign-test p-value over the seeds that are not ties (None if all tie).
    """

    seeds: int
    mean_diff: float
    ci_low: float | None
    ci_high: float | None
    wins: int
    losses: int
    sign_p: float | None

    @property
    def within_noise(self) -> bool:
        """The interval contains 0, or there are too few seeds for one."""
        return self.ci_low is None or self.ci_low <= 0.0 <= self.ci_high


def paired_compare(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> PairedComparison | None:
    """Compare two settings' values per seed (``{seed: value}``); None when they share no seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean = statistics.fmean(diffs)
    low = high = None
    if len(diffs) >= 2:
        with warnings.catch_warnings():  # equal differences on every seed: a valid, zero-width interval
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            test = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
            interval = test.confidence_interval(confidence_level=confidence)
        low, high = float(interval.low), float(interval.high)
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    sign_p = stats.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else None
    return PairedComparison(len(diffs), mean, low, high, wins, losses, sign_p)
