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
    assert c.p_difference == pytest.approx(0.1181, abs=2e-4)
    # TOST by hand with the closed-form t CDF of 2 df, F(t) = 1/2 + t / (2 sqrt(2 + t^2)), se = sd / sqrt 3:
    # against +0.05: t = (0.02333 - 0.05) / se = -3.0237, p = F(t) = 0.0471; against -0.05: t = 8.3151, p = 0.0071
    se = sd / math.sqrt(3)
    hand = [0.5 + t / (2 * math.sqrt(2 + t * t)) for t in ((0.07 / 3 - 0.05) / se, -(0.07 / 3 + 0.05) / se)]
    assert hand[0] == pytest.approx(0.0471, abs=2e-4) and c.p_equivalence == pytest.approx(max(hand), rel=1e-6)
    # the 95 % interval (-0.014, 0.061) leaves +-0.05, but TOST at 0.05 uses the 90 % one (-0.003, 0.049): equivalent
    assert c.verdict == "equivalent" and c.p_value == c.p_equivalence
    assert -0.05 < c.eq_low < c.eq_high < 0.05 and c.ci_high > 0.05
    # at Bonferroni m = 2 each one-sided test runs at 0.025 > 0.0471 fails: no longer equivalent, and the
    # difference test (p 0.118) does not reject either
    two = stats.paired(a, b, delta=0.05, comparisons=2)
    assert two.verdict == "inconclusive" and two.p_value == pytest.approx(0.1181, abs=2e-4)
    assert "TOST" in c.test_text() and f"p = {c.p_equivalence:.3g}" in c.test_text()


def test_a_deterministic_difference_is_a_value_with_no_interval_or_p():
    same = stats.paired({s: 2.0 + s for s in range(5)}, {s: 1.0 + s for s in range(5)}, delta=0.1,
                        higher_is_better=False)
    assert same.deterministic and same.verdict == "worse" and same.mean_diff == 1.0
    assert math.isnan(same.p_value) and math.isnan(same.p_difference) and math.isnan(same.p_equivalence)
    assert "p =" not in same.test_text() and "no interval or p" in same.test_text()
    close = stats.paired({s: 1.007 for s in range(5)}, {s: 1.0 for s in range(5)}, delta=0.01)
    assert close.deterministic and close.verdict == "equivalent" and math.isnan(close.p_value)


def test_the_logit_interval_stays_inside_0_1_where_the_t_interval_does_not():
    acc = [0.97, 0.968, 0.972, 0.289, 0.97]  # one seed far below the others
    t_low, t_high = stats.t_interval(acc)
    assert t_high > 1 or t_low < 0
    low, high = stats.logit_interval(acc)
    assert 0 < low < high < 1
    # by hand: the t-interval of the logits, mapped back
    z = [math.log(x / (1 - x)) for x in acc]
    zl, zh = stats.t_interval(z)
    assert low == pytest.approx(1 / (1 + math.exp(-zl))) and high == pytest.approx(1 / (1 + math.exp(-zh)))
    assert stats.logit_interval([1.0, 1.0, 0.99])[1] < 1  # a seed at exactly 1 keeps the logit finite
    assert stats.describe(acc, bounded=True)["ci_high"] == high


def test_seeds_needed_by_the_textbook_case():
    # a paired t-test to detect a difference of one sd at 5 % two-sided with 80 % power needs 10 pairs
    # (the normal approximation gives (1.96 + 0.8416)^2 = 7.85; the t correction adds two)
    assert stats.seeds_needed(sd=1.0, delta=1.0, alpha=0.05, power=0.8) == 10
    assert stats.seeds_needed(sd=0.01, delta=0.02, alpha=0.05) < stats.seeds_needed(sd=0.01, delta=0.02, alpha=0.005)


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


def test_the_geometric_interval_stays_above_zero_where_the_t_interval_does_not():
    costs = [2000.0, 900.0, 40.0, 1500.0, 30.0]  # a cost that collapses on some seeds
    assert stats.t_interval(costs)[0] < 0
    low, high = stats.geometric_interval(costs)
    zl, zh = stats.t_interval([math.log(c) for c in costs])  # by hand: the t-interval of the logs, mapped back
    assert low == pytest.approx(math.exp(zl)) and high == pytest.approx(math.exp(zh)) and 0 < low < high
    assert stats.errorbar(positive=True)(costs) == (low, high)
    assert all(math.isnan(v) for v in stats.geometric_interval([5.0]))


def test_power_lines_name_each_comparison_that_needs_more_seeds_and_whether_its_interval_clears_delta():
    """Seeds needed per comparison from its own paired sd: a wide comparison whose interval lies beyond ±δ is named
    as resolved, one whose interval straddles δ as under-powered; the rest are counted as met."""
    import pandas as pd

    from fplstudy.study.findings import AGAINST, _power_lines

    alpha, delta, n = 0.05 / 9, 0.02, 10
    row = dict(family="accuracy", group=AGAINST, n=n, alpha=alpha)
    table = pd.DataFrame([
        row | dict(a="p4", b="q4", sd_diff=0.010, mean_diff=0.0, ci_low=-0.01, ci_high=0.01),
        row | dict(a="p8", b="q8", sd_diff=0.012, mean_diff=0.0, ci_low=-0.01, ci_high=0.01),
        row | dict(a="p8", b="wide", sd_diff=0.038, mean_diff=0.125, ci_low=0.08, ci_high=0.17),
        row | dict(a="p8", b="straddle", sd_diff=0.038, mean_diff=0.01, ci_low=-0.03, ci_high=0.05)])
    summary = pd.DataFrame({"name": ["p4", "p8"], "nodes": [4, 8]})
    text = _power_lines({"accuracy_delta": delta}, table, summary)[0]
    need = {sd: stats.seeds_needed(sd, delta, alpha) for sd in (0.010, 0.012, 0.038)}
    assert need[0.010] <= need[0.012] <= n < need[0.038]
    assert f"4 nodes: paired sd 0.0100–0.0100 over 1 comparisons, at most {need[0.010]} seeds needed (met)" in text
    assert f"1 of them need at most {need[0.012]} seeds (met)" in text
    assert f"p8 vs wide (sd 0.0380) needs {need[0.038]}: its difference, +0.125 [+0.080, +0.170], lies wholly beyond ±δ" in text
    assert f"p8 vs straddle (sd 0.0380) needs {need[0.038]} (**more than this study runs**" in text
