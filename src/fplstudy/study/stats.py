"""Statistics of a study over seeds: t-intervals of means and paired comparisons with verdicts.

A plan is trained once per seed; the seed fixes the train/test split, the partition, the initial
weights and the shuffles, so two plans with the same seed saw the same data (a paired design). The
comparison of plan A with plan B on a metric is therefore made on the per-seed differences
``d_s = A_s - B_s``: their mean and its Student-t confidence interval (the interval of the paired
t-test, ``scipy.stats.ttest_rel``). The interval decides the verdict:

- ``equivalent within δ`` — the whole interval lies inside ``(-δ, +δ)`` (two one-sided tests);
- ``better`` / ``worse`` — the interval excludes 0 (and is not inside ``±δ``); which sign is better
  depends on the metric (higher accuracy, lower energy);
- ``inconclusive`` — otherwise: the difference is inside the noise of this many seeds.

Several comparisons in one family are corrected by Bonferroni: each interval is drawn at confidence
``1 - (1 - confidence) / m`` for ``m`` comparisons, so that all ``m`` intervals hold together with
probability at least ``confidence``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

VERDICTS = ("better", "worse", "equivalent", "inconclusive")


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values``.

    Args:
        values: one number per seed (NaN values are dropped).
        confidence: two-sided coverage, e.g. 0.95.

    Returns:
        ``(low, high)``; ``(mean, mean)`` when all values are equal; ``(nan, nan)`` for fewer than two
        values (no spread can be estimated).
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return (math.nan, math.nan)
    mean = float(x.mean())
    sd = float(x.std(ddof=1))
    half = float(_sps.t.ppf(0.5 + confidence / 2, x.size - 1)) * sd / math.sqrt(x.size)
    return (mean - half, mean + half)


def errorbar(confidence: float = 0.95) -> Callable[[Sequence[float]], tuple[float, float]]:
    """A callable for seaborn's ``errorbar=`` argument that draws :func:`t_interval` (the tables' CI)."""
    return lambda values: t_interval(values, confidence)


def describe(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """``n``, ``mean``, ``sd`` (ddof 1), ``ci_low``, ``ci_high`` of one metric over seeds."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    low, high = t_interval(x, confidence)
    return {"n": int(x.size), "mean": float(x.mean()) if x.size else math.nan,
            "sd": float(x.std(ddof=1)) if x.size > 1 else math.nan, "ci_low": low, "ci_high": high}


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of plan A against plan B on one metric.

    Attributes:
        n: seeds present in both plans.
        mean_diff: mean of the per-seed differences A - B.
        ci_low, ci_high: confidence interval of that mean (Bonferroni-adjusted level ``level``).
        level: the confidence of this one interval, ``1 - (1 - confidence) / m``.
        p_value: two-sided p of the paired t-test (``scipy.stats.ttest_rel``); NaN if undefined.
        verdict: ``better``, ``worse``, ``equivalent`` (within ``delta``) or ``inconclusive``,
            from A's point of view.
        delta: the equivalence margin used.
    """

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    level: float
    p_value: float
    verdict: str
    delta: float


def verdict(ci_low: float, ci_high: float, delta: float, *, higher_is_better: bool = True) -> str:
    """The verdict of an interval of A - B (see the module docstring).

    Args:
        ci_low, ci_high: the interval.
        delta: equivalence margin (same unit as the metric, > 0); 0 disables "equivalent".
        higher_is_better: True for accuracy, False for costs.
    """
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "inconclusive"
    if delta > 0 and -delta < ci_low and ci_high < delta:
        return "equivalent"
    if ci_low > 0:
        return "better" if higher_is_better else "worse"
    if ci_high < 0:
        return "worse" if higher_is_better else "better"
    return "inconclusive"


def paired(a: dict[int, float], b: dict[int, float], *, delta: float, confidence: float = 0.95,
           comparisons: int = 1, higher_is_better: bool = True) -> Comparison:
    """Compare plan A with plan B on per-seed values.

    Args:
        a, b: seed → metric value of each plan; only seeds in both count.
        delta: equivalence margin (metric units).
        confidence: family-wise coverage.
        comparisons: m, the number of comparisons in the family (Bonferroni).
        higher_is_better: direction of the metric.

    Returns:
        The :class:`Comparison`.
    """
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    level = 1 - (1 - confidence) / max(1, comparisons)
    low, high = t_interval(d, level)
    spread = float(d.std(ddof=1)) if d.size >= 2 else 0.0
    if spread <= 1e-12 * max(1.0, abs(float(d.mean()))):  # float noise only: every seed, same difference
        spread = 0.0
        low = high = float(d.mean()) if d.size >= 2 else math.nan
    if d.size >= 2 and spread > 0:
        p = float(_sps.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    elif d.size >= 2:
        p = 0.0 if float(d.mean()) != 0 else 1.0  # no spread: every seed shows the same difference
    else:
        p = math.nan
    return Comparison(n=int(d.size), mean_diff=float(d.mean()) if d.size else math.nan, ci_low=low,
                      ci_high=high, level=level, p_value=p,
                      verdict=verdict(low, high, delta, higher_is_better=higher_is_better), delta=delta)
