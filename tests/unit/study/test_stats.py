"""Confidence intervals and paired verdicts against hand-computed values on tiny tables."""

from __future__ import annotations

import math

import pytest

from fplstudy.study import stats

# Student-t quantiles by hand from a table: t(0.975, 2) = 4.302653, t(0.975, 4) = 2.776445.
T2, T4 = 4.302653, 2.776445


def test_t_interval_by_hand():
    low, high = stats.t_interval([0.1, 0.2, 0.3], 0.95)
    half = T2 * 0.1 / math.sqrt(3)  # sd of (0.1, 0.2, 0.3) is 0.1
    assert low == pytest.approx(0.2 - half, abs=1e-6) and high == pytest.approx(0.2 + half, abs=1e-6)


def test_describe_by_hand():
    d = stats.describe([1.0, 2.0, 3.0, 4.0, 5.0])
    sd = math.sqrt(2.5)  # sum of squared deviations 10, over n - 1 = 4
    assert d["n"] == 5 and d["mean"] == 3.0 and d["sd"] == pytest.approx(sd)
    assert d["ci_low"] == pytest.approx(3 - T4 * sd / math.sqrt(5), abs=1e-5)


def test_degenerate_intervals():
    assert stats.t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)  # no spread: the interval is the point
    assert all(math.isnan(v) for v in stats.t_interval([0.5]))  # one seed: no interval at all
    assert stats.verdict(math.nan, math.nan, 0.02) == "inconclusive"


def test_paired_comparison_by_hand():
    a = {0: 0.90, 1: 0.92, 2: 0.94}
    b = {0: 0.89, 1: 0.90, 2: 0.90}  # differences 0.01, 0.02, 0.04: mean 0.0233, sd 0.015275
    c = stats.paired(a, b, delta=0.05)
    sd = math.sqrt(((0.01 - 0.07 / 3) ** 2 + (0.02 - 0.07 / 3) ** 2 + (0.04 - 0.07 / 3) ** 2) / 2)
    half = T2 * sd / math.sqrt(3)
    assert c.n == 3 and c.mean_diff == pytest.approx(0.07 / 3)
    assert c.ci_low == pytest.approx(0.07 / 3 - half, abs=1e-6) and c.ci_high == pytest.approx(0.07 / 3 + half, abs=1e-6)
    # hand: t = mean / (sd / sqrt 3) = 2.6458, two-sided p with 2 df = 0.1181
    assert c.p_value == pytest.approx(0.1181, abs=2e-4)
    assert c.verdict == "inconclusive"  # the interval (-0.014, 0.061) neither excludes 0 nor fits in +-0.05


def test_only_shared_seeds_are_paired():
    c = stats.paired({0: 1.0, 1: 2.0, 7: 100.0}, {0: 0.5, 1: 1.5, 3: -9.0}, delta=0.1)
    assert c.n == 2 and c.mean_diff == 0.5 and c.verdict == "better"  # same difference every seed


def test_bonferroni_widens_each_interval():
    a, b = {s: 0.9 + 0.01 * s for s in range(5)}, {s: 0.9 + 0.005 * s * s for s in range(5)}
    one, many = stats.paired(a, b, delta=0.02), stats.paired(a, b, delta=0.02, comparisons=10)
    assert many.level == pytest.approx(0.995) and one.level == pytest.approx(0.95)
    assert many.ci_low < one.ci_low and many.ci_high > one.ci_high


@pytest.mark.parametrize("ci, delta, higher, expected", [
    ((-0.01, 0.01), 0.02, True, "equivalent"),
    ((0.01, 0.03), 0.02, True, "better"),
    ((-0.03, -0.01), 0.02, True, "worse"),
    ((-0.03, -0.01), 0.02, False, "better"),  # a cost that went down
    ((-0.01, 0.03), 0.02, True, "inconclusive"),
    ((0.001, 0.01), 0.0, True, "better"),  # no margin: equivalence is never declared
])
def test_verdict_rules(ci, delta, higher, expected):
    assert stats.verdict(*ci, delta, higher_is_better=higher) == expected


def test_verdict_flips_from_equivalent_to_inconclusive_as_the_difference_widens():
    base = {s: 0.95 for s in range(5)}
    noise = [0.002, -0.001, 0.0, 0.001, -0.002]  # mean 0
    verdicts = []
    for spread in (1, 5, 20):
        other = {s: 0.95 + spread * noise[s] for s in range(5)}
        verdicts.append(stats.paired(other, base, delta=0.01).verdict)
    assert verdicts[0] == "equivalent" and verdicts[-1] == "inconclusive"
