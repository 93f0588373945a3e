"""The study's findings: paired comparisons over seeds, decided by the statistics of
:mod:`fplstudy.study.stats`, and the lines of ``findings.md``."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from fplstudy.study import stats


def _per_seed(seeds: pd.DataFrame, name: str, metric: str) -> dict[int, float]:
    part = seeds[(seeds["name"] == name) & (seeds["status"] == "completed")]
    return {int(s): float(v) for s, v in zip(part["seed"], part[metric])}



def plan_pairs(findings_cfg: dict[str, Any], seeds: pd.DataFrame) -> list[tuple[str, str]]:
    """The registered ``(FPL plan, other plan)`` pairs of the accuracy, bytes and energy families, in order.

    Args:
        findings_cfg: the study's ``findings`` section.
        seeds: ``seeds.csv`` (or any table with ``name``, ``strategy``, ``nodes``, ``junction``, ``partition``).
    """
    f = findings_cfg
    junction = f.get("fpl_junction", "adapter")
    part = "features" if junction == "concat" else "iid"
    table = seeds.drop_duplicates("name").set_index("name")
    fpl = table[(table["strategy"] == "fpl") & (table["junction"] == junction) & (table["partition"] == part)]
    pairs = []
    for name, row in fpl.sort_values("nodes").iterrows():
        for other in f.get("against", []):
            match = table[(table["strategy"] == other) & (table["nodes"] == row["nodes"])
                          & (table["partition"] == "iid")]
            pairs += [(name, o) for o in match.index]
    return pairs


def comparisons(findings_cfg: dict[str, Any], seeds: pd.DataFrame) -> pd.DataFrame:
    """Every paired comparison the findings report, one row each.

    Families (Bonferroni within each, family-wise ``findings.confidence``):

    - ``accuracy``: the fixed FPL variant against each strategy of ``findings.against`` at every node
      count both were run at, IID data (``features`` for concat); per-seed difference of test accuracy,
      equivalence margin ``accuracy_delta``.
    - ``bytes`` and ``energy``: the same pairs; per-seed difference of log cost (a ratio), margin
      ``log(1 + cost_delta)``; lower is better.
    - ``non_iid``: every plan run on both IID and Dirichlet data, Dirichlet minus IID accuracy.

    Args:
        findings_cfg: the study's ``findings`` section.
        seeds: ``seeds.csv``.

    Returns:
        Columns ``family``, ``a``, ``b``, ``metric`` and the :class:`fplstudy.study.stats.Comparison` fields.
    """
    f = findings_cfg
    confidence = f.get("confidence", 0.95)
    table = seeds.drop_duplicates("name").set_index("name")
    pairs = plan_pairs(f, seeds)
    rows = []
    families = {"accuracy": ("test_acc_mean", f.get("accuracy_delta", 0.0), True, False),
                "bytes": ("bytes_total", math.log1p(f.get("cost_delta", 0.0)), False, True),
                "energy": ("energy_j", math.log1p(f.get("cost_delta", 0.0)), False, True)}
    for family, (metric, delta, higher, log) in families.items():
        for a, b in pairs:
            va, vb = _per_seed(seeds, a, metric), _per_seed(seeds, b, metric)
            if log:
                va, vb = _log_values(va), _log_values(vb)
            c = stats.paired(va, vb, delta=delta, confidence=confidence, comparisons=len(pairs),
                             higher_is_better=higher)
            rows.append({"family": family, "a": a, "b": b, "metric": metric, **c.__dict__})
    both = table[table["partition"].isin(["iid", "dirichlet"])]
    non_iid = []
    for name, row in both[both["partition"] == "dirichlet"].iterrows():
        twin = both[(both["partition"] == "iid") & (both["strategy"] == row["strategy"])
                    & (both["nodes"] == row["nodes"]) & (both["junction"] == row["junction"])]
        non_iid += [(name, t) for t in twin.index]
    for a, b in non_iid:
        c = stats.paired(_per_seed(seeds, a, "test_acc_mean"), _per_seed(seeds, b, "test_acc_mean"),
                         delta=f.get("accuracy_delta", 0.0), confidence=confidence, comparisons=len(non_iid))
        rows.append({"family": "non_iid", "a": a, "b": b, "metric": "test_acc_mean", **c.__dict__})
    return pd.DataFrame(rows, columns=["family", "a", "b", "metric", *stats.Comparison.__dataclass_fields__])



def _log_values(values: dict[int, float]) -> dict[int, float]:
    return {s: math.log(v) if v > 0 else math.nan for s, v in values.items()}



_WORDS = {"accuracy": {"better": "more accurate", "worse": "less accurate", "equivalent": "equivalent",
                       "inconclusive": "inconclusive"},
          "cost": {"better": "cheaper", "worse": "costlier", "equivalent": "equivalent",
                   "inconclusive": "inconclusive"},
          "non_iid": {"better": "more accurate on Dirichlet", "worse": "less accurate on Dirichlet",
                      "equivalent": "equivalent", "inconclusive": "inconclusive"}}



def findings(findings_cfg: dict[str, Any], table: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """The seed paper's claims checked on this study: one markdown line per comparison, each naming its
    test, n, interval and verdict, and the model-size increase of each junction (deterministic).

    Args:
        findings_cfg: the study's ``findings`` section.
        table: :func:`comparisons`.
        summary: ``summary.csv``.

    Returns:
        Markdown lines.
    """
    f = findings_cfg
    confidence = f.get("confidence", 0.95)
    lines = [f"Paired comparisons over seeds (the seed fixes split, partition, initial weights and shuffles, so "
             f"plans with the same seed saw the same data). Each interval is the Student-t interval of the mean "
             f"per-seed difference (the paired t-test's), Bonferroni-adjusted within each family so that the "
             f"family's intervals hold together at {confidence:.0%}. Verdicts: *equivalent* when the whole "
             f"interval lies within ±δ, *better*/*worse* when it excludes 0, else *inconclusive* (inside the "
             f"noise of this many seeds). The FPL variant compared is fixed in params.yaml "
             f"(`findings.fpl_junction: {f.get('fpl_junction', 'adapter')}`), not chosen after the study.", ""]
    headings = {"accuracy": f"## Accuracy: FPL against {', '.join(o.upper() for o in f.get('against', []))} "
                            f"(δ = {f.get('accuracy_delta', 0.0):.3f})",
                "bytes": f"## Bytes sent: FPL against the same (ratio, δ = {f.get('cost_delta', 0.0):.0%})",
                "energy": f"## Energy: FPL against the same (ratio, δ = {f.get('cost_delta', 0.0):.0%})",
                "non_iid": f"## Non-IID data: Dirichlet(α) minus IID accuracy, same plan "
                           f"(δ = {f.get('accuracy_delta', 0.0):.3f})"}
    for family, heading in headings.items():
        part = table[table["family"] == family]
        if part.empty:
            continue
        lines += [heading, ""]
        m = len(part)
        for _, c in part.iterrows():
            test = (f"paired t-test, n = {c['n']}, Bonferroni m = {m} ({c['level']:.2%} interval), "
                    f"p = {c['p_value']:.3g}")
            if family in ("bytes", "energy"):
                r, lo, hi = (math.exp(v) for v in (c["mean_diff"], c["ci_low"], c["ci_high"]))
                word = _WORDS["cost"][c["verdict"]]
                lines.append(f"- **{c['a']} vs {c['b']}**: {family} ratio {r:.3f} [{lo:.3f}, {hi:.3f}] — "
                             f"**{word}** ({test})")
            else:
                word = _WORDS["non_iid" if family == "non_iid" else "accuracy"][c["verdict"]]
                lines.append(f"- **{c['a']} vs {c['b']}**: difference {c['mean_diff']:+.4f} "
                             f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] — **{word}** ({test})")
        lines.append("")
    fpl = summary[summary["strategy"] == "fpl"]
    if not fpl.empty:
        lines += [f"## Model size (deterministic: no seed changes it; \"modest\" means at most "
                  f"+{f.get('size_delta', 0.1):.0%})", ""]
        for junction, ratio in fpl.groupby("junction")["model_params_ratio_mean"].max().items():
            word = "modest" if ratio - 1 <= f.get("size_delta", 0.1) else "not modest"
            lines.append(f"- **junction {junction}**: the deployed model is at most {ratio:.3f}× the original "
                         f"(+{100 * (ratio - 1):.1f} %) — **{word}**")
        lines.append("")
    return lines
