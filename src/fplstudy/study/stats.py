"""Statistics of a study over seeds: intervals of means and paired comparisons with verdicts.

A plan is trained once per seed; the seed fixes the train/test split, the partition, the initial
weights and the shuffles, so two plans with the same seed saw the same data (a paired design). The
comparison of plan A with plan B on a metric is therefore made on the per-seed differences
``d_s = A_s - B_s``. Each comparison of a family of ``m`` is tested at ``α/m`` (Bonferroni, with
``α = 1 - confidence``), so that the family's verdicts hold together with probability at least ``confidence``:

- ``equivalent`` within ``±δ`` — the two one-sided tests (TOST: ``scipy.stats.ttest_1samp`` of the
  differences against ``-δ``, alternative ``greater``, and against ``+δ``, alternative ``less``) both reject at
  ``α/m``; their larger p is the TOST p. Equivalently, the ``1 - 2α/m`` interval lies inside ``(-δ, +δ)``;
- ``better`` / ``worse`` — otherwise, the paired t-test (``scipy.stats.ttest_rel``) rejects "no
  difference" at ``α/m``: the two-sided ``1 - α/m`` interval excludes 0; which sign is better depends on the
  metric (higher accuracy, lower energy);
- ``inconclusive`` — otherwise: the difference is inside the noise of this many seeds.

A difference that is the same on every seed (a cost on IID data: it depends on the shard sizes and the
profiles, not on the weights) is *deterministic given the profiles*: it is reported as a value, with no
interval and no p, and its verdict compares the value with ``±δ`` directly.

Accuracies lie in [0, 1]; a Student-t interval of a few seeds can leave that range (one seed far below
the others), so per-plan accuracy intervals are drawn on the logit scale (:func:`logit_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special as _spf
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


def logit_interval(values: Sequence[float], confidence: float = 0.95, eps: float = 1e-4) -> tuple[float, float]:
    """Confidence interval of a proportion's mean that stays inside (0, 1): the Student-t interval of the
    mean of ``logit(x)``, mapped back through the logistic function (the *logit interval*).

    Args:
        values: one number per seed in [0, 1] (NaN values are dropped).
        confidence: two-sided coverage.
        eps: values are clipped to ``[eps, 1 - eps]`` first, so that a seed at exactly 0 or 1 keeps the logit finite.

    Returns:
        ``(low, high)`` inside (0, 1); ``(x, x)`` when all values are equal; ``(nan, nan)`` for fewer than two.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return (math.nan, math.nan)
    if float(x.max() - x.min()) == 0.0:
        return (float(x[0]), float(x[0]))
    z = _spf.logit(np.clip(x, eps, 1 - eps))
    low, high = t_interval(z, confidence)
    return (float(_spf.expit(low)), float(_spf.expit(high)))


def geometric_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of a positive quantity that stays above 0 (for a log axis): the Student-t interval of
    the mean of ``log(x)``, mapped back through ``exp``; ``(nan, nan)`` for fewer than two positive values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x) & (x > 0)]
    low, high = t_interval(np.log(x), confidence)
    return (math.exp(low), math.exp(high)) if not math.isnan(low) else (math.nan, math.nan)


def errorbar(confidence: float = 0.95, bounded: bool = False,
             positive: bool = False) -> Callable[[Sequence[float]], tuple[float, float]]:
    """A callable for seaborn's ``errorbar=`` argument that draws the tables' interval: :func:`t_interval`, for a
    proportion (``bounded``) :func:`logit_interval`, for a positive quantity on a log axis (``positive``)
    :func:`geometric_interval`."""
    if bounded:
        return lambda values: logit_interval(values, confidence)
    if positive:
        return lambda values: geometric_interval(values, confidence)
    return lambda values: t_interval(values, confidence)


def describe(values: Sequence[float], confidence: float = 0.95, bounded: bool = False) -> dict[str, float]:
    """``n``, ``mean``, ``sd`` (ddof 1), ``ci_low``, ``ci_high`` of one metric over seeds: the Student-t
    interval, or for a proportion (``bounded``) the :func:`logit_interval`."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    low, high = (logit_interval if bounded else t_interval)(x, confidence)
    return {"n": int(x.size), "mean": float(x.mean()) if x.size else math.nan,
            "sd": float(x.std(ddof=1)) if x.size > 1 else math.nan, "ci_low": low, "ci_high": high}


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of plan A against plan B on one metric.

    Attributes:
        n: seeds present in both plans.
        mean_diff: mean of the per-seed differences A - B.
        ci_low, ci_high: the two-sided ``level`` interval of that mean (the paired t-test's); for a
            deterministic difference, the value itself.
        level: the confidence of this one interval, ``1 - α/m``.
        p_value: the p of the test that decided the verdict: the TOST p for ``equivalent``, the paired
            t-test's otherwise; NaN when deterministic or undefined.
        verdict: ``better``, ``worse``, ``equivalent`` (within ``delta``) or ``inconclusive``,
            from A's point of view.
        delta: the equivalence margin used.
        p_difference: two-sided p of the paired t-test (``scipy.stats.ttest_rel``).
        p_equivalence: the TOST p, the larger of the two one-sided p's; NaN without a margin.
        eq_low, eq_high: the ``1 - 2α/m`` interval whose inclusion in ``±delta`` is the TOST decision.
        deterministic: every seed shows the same difference (no interval, no p).
        alpha: the level each test of the family is run at, ``α/m``.
    """

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    level: float
    p_value: float
    verdict: str
    delta: float
    p_difference: float = math.nan
    p_equivalence: float = math.nan
    eq_low: float = math.nan
    eq_high: float = math.nan
    deterministic: bool = False
    alpha: float = 0.05

    def test_text(self) -> str:
        """How the verdict was reached, for a findings line: the test, n, the family's per-test level and p."""
        if self.deterministic:
            return f"the same on all n = {self.n} seeds: a value, no interval or p"
        if self.verdict == "equivalent":
            return (f"TOST, n = {self.n}, each one-sided test at α/m = {self.alpha:.3g}, p = {self.p_value:.3g}; "
                    f"{1 - 2 * self.alpha:.2%} interval [{self.eq_low:+.4g}, {self.eq_high:+.4g}]")
        tost = "" if math.isnan(self.p_equivalence) else f", TOST p = {self.p_equivalence:.3g}"
        return f"paired t-test, n = {self.n}, at α/m = {self.alpha:.3g}, p = {self.p_difference:.3g}{tost}"


def verdict(ci_low: float, ci_high: float, delta: float, *, higher_is_better: bool = True) -> str:
    """The verdict of an interval of A - B: ``equivalent`` when it lies inside ``(-delta, +delta)``,
    ``better``/``worse`` when it excludes 0, else ``inconclusive`` (a deterministic difference is the interval
    ``(d, d)``).

    Args:
        ci_low, ci_high: the interval.
        delta: equivalence margin (same unit as the metric, > 0); 0 disables "equivalent" (except for an
            exact zero difference).
        higher_is_better: True for accuracy, False for costs.
    """
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "inconclusive"
    if (delta > 0 and -delta < ci_low and ci_high < delta) or ci_low == ci_high == 0:
        return "equivalent"
    if ci_low > 0:
        return "better" if higher_is_better else "worse"
    if ci_high < 0:
        return "worse" if higher_is_better else "better"
    return "inconclusive"


def _direction(mean: float, higher_is_better: bool) -> str:
    return "better" if (mean > 0) == higher_is_better else "worse"


def paired(a: dict[int, float], b: dict[int, float], *, delta: float, confidence: float = 0.95,
           comparisons: int = 1, higher_is_better: bool = True) -> Comparison:
    """Compare plan A with plan B on per-seed values (see the module docstring for the rules).

    Args:
        a, b: seed → metric value of each plan; only seeds in both count.
        delta: equivalence margin (metric units); 0 disables "equivalent".
        confidence: family-wise coverage.
        comparisons: m, the number of comparisons in the family (Bonferroni).
        higher_is_better: direction of the metric.

    Returns:
        The :class:`Comparison`.
    """
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    d = d[~np.isnan(d)]
    alpha = (1 - confidence) / max(1, comparisons)
    level = 1 - alpha
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    common = {"n": n, "mean_diff": mean, "level": level, "delta": delta, "alpha": alpha}
    if n < 2:
        return Comparison(ci_low=math.nan, ci_high=math.nan, p_value=math.nan, verdict="inconclusive", **common)
    spread = float(d.std(ddof=1))
    if spread <= 1e-12 * max(1.0, abs(mean)):  # float noise only: every seed, the same difference
        return Comparison(ci_low=mean, ci_high=mean, p_value=math.nan, deterministic=True,
                          verdict=verdict(mean, mean, delta, higher_is_better=higher_is_better), **common)
    low, high = t_interval(d, level)
    p_diff = float(_sps.ttest_1samp(d, 0.0).pvalue)  # = ttest_rel(a, b): the test of the differences
    p_eq, eq_low, eq_high = math.nan, math.nan, math.nan
    if delta > 0:
        p_eq = max(float(_sps.ttest_1samp(d, -delta, alternative="greater").pvalue),
                   float(_sps.ttest_1samp(d, delta, alternative="less").pvalue))
        eq_low, eq_high = t_interval(d, 1 - 2 * alpha)
    if p_eq < alpha:
        word, p = "equivalent", p_eq
    elif p_diff < alpha:
        word, p = _direction(mean, higher_is_better), p_diff
    else:
        word, p = "inconclusive", p_diff
    return Comparison(ci_low=low, ci_high=high, p_value=p, verdict=word, p_difference=p_diff, p_equivalence=p_eq,
                      eq_low=eq_low, eq_high=eq_high, **common)


def seeds_needed(sd: float, delta: float, alpha: float, power: float = 0.8, most: int = 1000) -> int:
    """Seeds a paired t-test needs to detect a true mean difference of ``delta`` with ``power``, two-sided at
    ``alpha``, when the per-seed differences have standard deviation ``sd``: the smallest ``n >= 2`` whose
    power, ``P(|T| > t_{1-alpha/2, n-1})`` with ``T`` noncentral t of ``n - 1`` degrees of freedom and
    noncentrality ``delta * sqrt(n) / sd``, reaches ``power`` (``most`` if none up to it does).
    """
    if sd <= 0:
        return 2
    for n in range(2, most + 1):
        df, nc = n - 1, delta * math.sqrt(n) / sd
        crit = float(_sps.t.ppf(1 - alpha / 2, df))
        if float(_sps.nct.sf(crit, df, nc) + _sps.nct.cdf(-crit, df, nc)) >= power:
            return n
    return most
