"""The study's findings: paired comparisons over seeds, decided by the statistics of
:mod:`fplstudy.study.stats`, and the lines of ``findings.md``.

Every comparison is registered before the study runs (``params.yaml``, the study's ``findings``): the FPL
variant ``fpl_junction`` against each strategy of ``against`` at every node count both were run at, on IID
data, plus any explicit ``pairs``. They are read twice:

- **at equal accuracy** — the rounds, bytes, energy and makespan each plan spent to first reach
  ``target_acc`` (:func:`fplstudy.study.tables.to_target`), paired over the seeds where both plans reached it;
- **at the fixed budget** — the accuracy after the study's ``min_rounds`` (all its rounds when runs do not stop
  at a target), and the bytes and energy of those rounds.

An FPL plan with one branch is sl (or mp) with an adapter: it is named as degenerate and left out of the
FPL-against-X families. A plan with one data owner sees the same data under every partition, so its
Dirichlet-against-IID comparison is vacuous and left out of the non-IID family.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from fplstudy.study import stats
from fplstudy.study.tables import variant

# family -> (seeds.csv column, margin key, higher is better, compared as a ratio)
FAMILIES = {
    "rounds_to_target": ("rounds_to_target", "cost_delta", False, True),
    "bytes_to_target": ("bytes_to_target", "cost_delta", False, True),
    "energy_to_target": ("energy_j_to_target", "cost_delta", False, True),
    "time_to_target": ("makespan_s_to_target", "cost_delta", False, True),
    "accuracy": ("test_acc_mean", "accuracy_delta", True, False),
    "bytes": ("bytes_total", "cost_delta", False, True),
    "energy": ("energy_j", "cost_delta", False, True),
}
# Runs that stop at a target accuracy are compared at the fixed budget on their first min_rounds rounds.
BUDGET_COLUMNS = {"test_acc_mean": "test_acc_budget", "bytes_total": "bytes_budget", "energy_j": "energy_j_budget"}
TO_TARGET = ("rounds_to_target", "bytes_to_target", "energy_to_target", "time_to_target")
# Each family of comparisons is split in two groups, each with its own Bonferroni correction: FPL against the
# other strategies, and FPL's shapes, junction positions and sync variants against its default shape.
AGAINST, WITHIN = "FPL against the others", "FPL against its default shape"
# the cost families whose lines say whether their verdict holds across the profile ranges, and the re-priced total
# (fplstudy.study.sensitivity) each reads
ROBUST = {"energy": "energy_j", "energy_to_target": "energy_j_to_target", "time_to_target": "makespan_s_to_target"}
COLUMNS = ("family", "group", "a", "b", "metric", "sd_diff", "left_out", *stats.Comparison.__dataclass_fields__)


def _per_seed(seeds: pd.DataFrame, name: str, metric: str) -> dict[int, float]:
    part = seeds[(seeds["name"] == name) & (seeds["status"] == "completed")]
    return {int(s): float(v) for s, v in zip(part["seed"], part[metric])}


def _plans(seeds: pd.DataFrame) -> pd.DataFrame:
    return seeds.drop_duplicates("name").set_index("name")


def degenerate(findings_cfg: dict[str, Any], seeds: pd.DataFrame) -> list[str]:
    """The FPL plans of the tested variant with a single branch (sl or mp with an adapter): left out of the
    FPL-against-X families and named in the findings."""
    return [str(n) for n, row in _tested(findings_cfg, seeds).iterrows() if row["branches"] <= 1]


def _tested(findings_cfg: dict[str, Any], seeds: pd.DataFrame) -> pd.DataFrame:
    """The plans of the tested FPL variant: its junction, on IID data (``features`` for concat), of the default
    shape (no other swept key: the shapes, junction positions and sync variants are compared through ``pairs``)."""
    junction = findings_cfg.get("fpl_junction", "adapter")
    part = "features" if junction == "concat" else "iid"
    table = _plans(seeds)
    fpl = table[(table["strategy"] == "fpl") & (table["junction"] == junction) & (table["partition"] == part)]
    default = pd.Series([variant({**row, "name": name}) == "" for name, row in fpl.iterrows()], index=fpl.index,
                        dtype=bool)
    return fpl[default]


def plan_pairs(findings_cfg: dict[str, Any], seeds: pd.DataFrame) -> list[tuple[str, str]]:
    """The registered ``(FPL plan, other plan)`` pairs of the accuracy, bytes and energy families, in order:
    the FPL variant (``fpl_junction``, IID data or ``features`` for concat, default shape, more than one branch) against each
    strategy of ``against`` at the same node count on IID data, then the explicit ``pairs``.

    Args:
        findings_cfg: the study's ``findings`` section.
        seeds: ``seeds.csv`` (or any table with ``name``, ``strategy``, ``nodes``, ``junction``, ``partition``,
            ``branches``).
    """
    f = findings_cfg
    table = _plans(seeds)
    fpl = _tested(f, seeds)
    left_out = set(degenerate(f, seeds))
    pairs = []
    for name, row in fpl.sort_values("nodes").iterrows():
        if name in left_out:
            continue
        for other in f.get("against", []):
            match = table[(table["strategy"] == other) & (table["nodes"] == row["nodes"])
                          & (table["partition"] == "iid")]
            pairs += [(str(name), str(o)) for o in match.index]
    pairs += [(str(a), str(b)) for a, b in f.get("pairs", []) if (str(a), str(b)) not in pairs]
    return pairs


def _log_values(values: dict[int, float]) -> dict[int, float]:
    return {s: math.log(v) if v > 0 else math.nan for s, v in values.items()}


def _sd(a: dict[int, float], b: dict[int, float]) -> float:
    d = np.array([a[s] - b[s] for s in sorted(set(a) & set(b))], dtype=float)
    d = d[~np.isnan(d)]
    return float(d.std(ddof=1)) if d.size > 1 else math.nan


def _row(family: str, a: str, b: str, metric: str, va: dict, vb: dict, c: stats.Comparison,
         left_out: str = "", group: str = AGAINST) -> dict[str, Any]:
    return {"family": family, "group": group, "a": a, "b": b, "metric": metric, "sd_diff": _sd(va, vb),
            "left_out": left_out, **c.__dict__}


def _group(table: pd.DataFrame, a: str, b: str) -> str:
    """The family group of a registered pair: :data:`AGAINST` (FPL against another strategy) or :data:`WITHIN`
    (one FPL plan against another: a shape, a junction position or a sync against the default)."""
    both_fpl = all(table.loc[n, "strategy"] == "fpl" for n in (a, b) if n in table.index)
    return WITHIN if both_fpl else AGAINST


def comparisons(findings_cfg: dict[str, Any], seeds: pd.DataFrame) -> pd.DataFrame:
    """Every paired comparison the findings report, one row each.

    Families (Bonferroni within each, family-wise ``findings.confidence``), each over :func:`plan_pairs`:

    - ``rounds_to_target``, ``bytes_to_target``, ``energy_to_target``, ``time_to_target`` (when the seeds carry
      ``_to_target`` columns): per-seed log ratio over the seeds where both plans reached the target, margin
      ``log(1 + cost_delta)``; lower is better. ``left_out`` says which plan missed the target on which seeds.
    - ``accuracy``: per-seed difference of final test accuracy, margin ``accuracy_delta``.
    - ``bytes`` and ``energy``: per-seed log ratio of the fixed budget's cost, margin ``log(1 + cost_delta)``.
    - ``non_iid``: every plan with more than one data owner run on both IID and Dirichlet data, Dirichlet minus
      IID accuracy (a plan with one data owner gets the same data under both: vacuous, left out).

    Args:
        findings_cfg: the study's ``findings`` section.
        seeds: ``seeds.csv``.

    Returns:
        Columns :data:`COLUMNS`: the family, the plans, the metric, the sd of the per-seed differences, what was
        left out, and the :class:`fplstudy.study.stats.Comparison` fields.
    """
    f = findings_cfg
    confidence = f.get("confidence", 0.95)
    table = _plans(seeds)
    pairs = plan_pairs(f, seeds)
    groups = {a_b: _group(table, *a_b) for a_b in pairs}
    sizes = {g: sum(1 for v in groups.values() if v == g) for g in set(groups.values())}
    rows = []
    for family, (metric, margin, higher, ratio) in FAMILIES.items():
        metric = BUDGET_COLUMNS.get(metric, metric) if BUDGET_COLUMNS.get(metric) in seeds else metric
        if metric not in seeds:
            continue
        delta = math.log1p(f.get(margin, 0.0)) if ratio else f.get(margin, 0.0)
        for a, b in pairs:
            va, vb = _per_seed(seeds, a, metric), _per_seed(seeds, b, metric)
            missed = ", ".join(f"{name} on seeds {', '.join(str(s) for s in sorted(s for s, v in vals.items() if math.isnan(v)))}"
                               for name, vals in ((a, va), (b, vb)) if any(math.isnan(v) for v in vals.values()))
            if ratio:
                va, vb = _log_values(va), _log_values(vb)
            group = groups[(a, b)]
            c = stats.paired(va, vb, delta=delta, confidence=confidence, comparisons=sizes[group],
                             higher_is_better=higher)
            rows.append(_row(family, a, b, metric, va, vb, c, f"not reached by {missed}" if missed else "", group))
    both = table[table["partition"].isin(["iid", "dirichlet"])]
    non_iid = []
    for name, row in both[both["partition"] == "dirichlet"].iterrows():
        twin = both[(both["partition"] == "iid") & (both["strategy"] == row["strategy"])
                    & (both["nodes"] == row["nodes"]) & (both["junction"] == row["junction"])]
        same = [t for t, r in twin.iterrows() if variant({**r, "name": t}) == variant({**row, "name": name})]
        if int(row.get("data_owners", row["branches"])) > 1:
            non_iid += [(str(name), str(t)) for t in same]
    acc = "test_acc_budget" if "test_acc_budget" in seeds else "test_acc_mean"  # the fixed budget, as above
    for a, b in non_iid:
        va, vb = _per_seed(seeds, a, acc), _per_seed(seeds, b, acc)
        c = stats.paired(va, vb, delta=f.get("accuracy_delta", 0.0), confidence=confidence, comparisons=len(non_iid))
        rows.append(_row("non_iid", a, b, acc, va, vb, c, group="same plan"))
    return pd.DataFrame(rows, columns=list(COLUMNS))


_WORDS = {"accuracy": {"better": "more accurate", "worse": "less accurate", "equivalent": "equivalent",
                       "inconclusive": "inconclusive"},
          "cost": {"better": "cheaper", "worse": "costlier", "equivalent": "equivalent",
                   "inconclusive": "inconclusive"},
          "non_iid": {"better": "more accurate on Dirichlet", "worse": "less accurate on Dirichlet",
                      "equivalent": "equivalent", "inconclusive": "inconclusive"}}

_WHAT = {"rounds_to_target": "rounds", "bytes_to_target": "bytes", "energy_to_target": "energy",
         "time_to_target": "makespan", "bytes": "bytes", "energy": "energy"}


def _claim(family: str, c: pd.Series) -> str:
    """One findings line: the pair, the number (ratio or difference) with its interval or "deterministic",
    the verdict and the test."""
    comp = _comparison(c)
    if comp.n < 2:
        missed = f" ({c['left_out']})" if c["left_out"] else ""
        return f"- **{c['a']} vs {c['b']}**: fewer than two seeds where both reached the target{missed} — **not compared**"
    note = f"; left out: {c['left_out']}" if c["left_out"] else ""
    if family in _WHAT:
        r = math.exp(comp.mean_diff)
        where = "" if comp.deterministic else f" [{math.exp(comp.ci_low):.3f}, {math.exp(comp.ci_high):.3f}]"
        head = f"{_WHAT[family]} ratio {r:.3f}{where}"
        word = _WORDS["cost"][comp.verdict]
    else:
        where = "" if comp.deterministic else f" [{comp.ci_low:+.4f}, {comp.ci_high:+.4f}]"
        head = f"difference {comp.mean_diff:+.4f}{where}"
        word = _WORDS["non_iid" if family == "non_iid" else "accuracy"][comp.verdict]
    return f"- **{c['a']} vs {c['b']}**: {head} — **{word}** ({comp.test_text()}{note})"


def _comparison(c: pd.Series) -> stats.Comparison:
    """The :class:`fplstudy.study.stats.Comparison` of one row of :func:`comparisons`."""
    return stats.Comparison(**{k: c[k] for k in stats.Comparison.__dataclass_fields__})


def _short(family: str, c: pd.Series) -> str:
    comp = _comparison(c)
    if comp.n < 2:
        return f"{_WHAT.get(family, 'accuracy')} not compared (target missed)"
    word = _WORDS["cost" if family in _WHAT else "accuracy"][comp.verdict]
    if family in _WHAT:
        return f"{_WHAT[family]} ×{math.exp(comp.mean_diff):.2f} ({word})"
    return f"accuracy {comp.mean_diff:+.3f} ({word})"


def _answer(registered: pd.DataFrame, compared: list[tuple[str, str]], target: float, budget: str) -> list[str]:
    """One line per registered pair: its verdicts at equal accuracy and at the fixed budget, side by side."""
    if not compared:
        return []
    lines = ["## The answer, pair by pair", "",
             f"FPL plan against the other, at equal accuracy ({target:g}) | at the fixed budget ({budget}); ratios "
             "are FPL over the other (below 1: FPL spends less). The sections below give each number's test.", ""]
    against = registered[registered["group"] == AGAINST]
    for view, families in (("At equal accuracy", TO_TARGET[1:]), ("At the fixed budget", ("bytes", "energy"))):
        part = against[against["family"].isin(families) & (against["n"] >= 2)]
        if part.empty:
            continue
        tally = part["verdict"].map(_WORDS["cost"]).value_counts()
        lines.append(f"{view}, FPL's costs (bytes, energy, makespan where compared) against the other strategies: "
                     + ", ".join(f"{tally.get(w, 0)} {w}" for w in ("cheaper", "costlier", "equivalent", "inconclusive"))
                     + f" of {len(part)} comparisons.")
        lines.append("")
    for a, b in compared:
        mine = registered[(registered["a"] == a) & (registered["b"] == b)].set_index("family")
        equal = [_short(fam, mine.loc[fam]) for fam in TO_TARGET if fam in mine.index]
        fixed = [_short(fam, mine.loc[fam]) for fam in ("accuracy", "bytes", "energy") if fam in mine.index]
        lines.append(f"- *{a} vs {b}*: " + ("; ".join(equal) + " | " if equal else "") + "; ".join(fixed))
    return [*lines, ""]


def _power_lines(f: dict[str, Any], table: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """The power calculation of the accuracy family: at each node count, the measured paired sd of each
    comparison and the seeds a paired t-test at the family's per-test level needs to detect ``accuracy_delta``
    with 80 % power; a comparison that needs more seeds than the study runs is named, with whether its interval
    already lies wholly beyond ±δ (then more seeds would not turn its verdict on δ)."""
    acc = table[(table["family"] == "accuracy") & (table["group"] == AGAINST) & table["sd_diff"].notna()]
    if acc.empty:
        return []
    nodes = summary.set_index("name")["nodes"]
    alpha = float(acc["alpha"].iloc[0])
    delta = f.get("accuracy_delta", 0.0)
    seeds = int(acc["n"].max())
    parts = []
    for n_nodes, part in acc.groupby(acc["a"].map(nodes)):
        need = part["sd_diff"].map(lambda sd: stats.seeds_needed(sd, delta, alpha) if delta > 0 else math.nan)
        short = part[need > seeds]
        text = (f"{int(n_nodes)} nodes: paired sd {part['sd_diff'].min():.4f}–{part['sd_diff'].max():.4f} over "
                f"{len(part)} comparisons, ")
        if short.empty:
            parts.append(text + f"at most {int(need.max())} seeds needed (met)")
            continue
        met = len(part) - len(short)
        named = []
        for i, c in short.iterrows():
            beyond = c["ci_low"] > delta or c["ci_high"] < -delta
            named.append(f"{c['a']} vs {c['b']} (sd {c['sd_diff']:.4f}) needs {int(need[i])}"
                         + (f": its difference, {c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], lies "
                            "wholly beyond ±δ, so its verdict does not rest on resolving δ" if beyond else
                            " (**more than this study runs**: a difference of δ there may read *inconclusive*)"))
        parts.append(text + (f"{met} of them need at most {int(need[need <= seeds].max())} seeds (met); " if met
                             else "") + "; ".join(named))
    return [f"Power: a paired t-test at α/m = {alpha:.3g} (the accuracy family's per-test level) detects a true "
            f"difference of δ = {delta:g} with 80 % power when the seeds n satisfy the noncentral-t power equation "
            f"(`fplstudy.study.stats.seeds_needed`), from each comparison's paired sd measured in this study; "
            f"n = {seeds}. " + "; ".join(parts) + ".", ""]


def _robust(sensitivity: pd.DataFrame | None, a: str, b: str, metric: str) -> str:
    """What the profile ranges do to a cost verdict (``results/sensitivity/verdicts.csv``), for a findings line."""
    if sensitivity is None or sensitivity.empty:
        return ""
    row = sensitivity[(sensitivity["a"] == a) & (sensitivity["b"] == b) & (sensitivity["metric"] == metric)]
    if row.empty:
        return ""
    r = row.iloc[0]
    if bool(r["holds"]):
        return f"; the point ratio's verdict holds across the profile ranges (ratio {r['ratio_min']:.3g}–{r['ratio_max']:.3g})"
    return (f"; **the point ratio's verdict does not hold across the profile ranges** (ratio {r['ratio_min']:.3g}–"
            f"{r['ratio_max']:.3g}; flips at {_flips(r)})")


def _flips(r: pd.Series) -> str:
    """Where a sensitivity verdict flips: the profile numbers' ends, else the Monte Carlo draws."""
    if isinstance(r["flips"], str) and r["flips"]:
        return r["flips"]
    return f"{int(r['mc_flips'])} of {int(r['mc_draws'])} Monte Carlo draws"


def _sensitivity_lines(sensitivity: pd.DataFrame | None) -> list[str]:
    if sensitivity is None or sensitivity.empty:
        return []
    held = int(sensitivity["holds"].astype(bool).sum())
    lines = ["## Sensitivity to the profiles", "",
             f"Every run re-priced at each profile number's low and high and at Monte Carlo draws over all ranges "
             f"(`dvc repro sensitivity`, results/sensitivity/, docs/sensitivity.md): {held} of {len(sensitivity)} cost "
             "verdicts (energy and makespan, to the target accuracy and of the fixed budget) hold across the "
             "ranges.", ""]
    for _, r in sensitivity[~sensitivity["holds"].astype(bool)].iterrows():
        lines.append(f"- {r['a']} vs {r['b']}, {r['metric']}: {r['verdict']} at the nominal profiles (ratio "
                     f"{r['ratio']:.3f}), ratio {r['ratio_min']:.3g}–{r['ratio_max']:.3g}; flips at {_flips(r)}")
    return [*lines, ""]


def findings(findings_cfg: dict[str, Any], table: pd.DataFrame, summary: pd.DataFrame,
             budget_rounds: int | None = None, sensitivity: pd.DataFrame | None = None) -> list[str]:
    """The seed paper's claims checked on this study: one markdown line per comparison, each naming its
    test, n, interval (or "deterministic") and verdict; who each compared plan's nodes are; the model-size
    increase of each junction (deterministic).

    Args:
        findings_cfg: the study's ``findings`` section.
        table: :func:`comparisons`.
        summary: ``summary.csv``.
        budget_rounds: the study's rounds, named in the fixed-budget headings.
        sensitivity: the profile-sensitivity verdicts (``results/sensitivity/verdicts.csv``); each line of energy
            (to the target and of the fixed budget) and of makespan to the target then says whether its point
            ratio's verdict holds across the profile ranges.

    Returns:
        Markdown lines.
    """
    f = findings_cfg
    confidence = f.get("confidence", 0.95)
    target = f.get("target_acc", 0.9)
    cost_d, acc_d = f.get("cost_delta", 0.0), f.get("accuracy_delta", 0.0)
    budget = f"{budget_rounds} rounds" if budget_rounds else "the study's rounds"
    lines = ["The seed paper (Malandrino & Chiasserini, *Flexible Parallel Learning in Edge Scenarios*, PerCom "
             "Workshops 2022) claims that FPL offers an excellent trade-off among computation and energy, "
             "communication and accuracy. The comparisons below, registered in params.yaml before the study ran, "
             f"test the FPL variant `{f.get('fpl_junction', 'adapter')}` against "
             f"{', '.join(o.upper() for o in f.get('against', []))} at equal accuracy (the costs of reaching "
             f"{target:g} test accuracy) and at a fixed budget ({budget}).", "",
             "## How to read the verdicts", "",
             "Paired comparisons over seeds: the seed fixes split, partition, initial weights and shuffles, so plans "
             "with the same seed saw the same data. Each family of m comparisons is tested at α/m (Bonferroni, "
             f"family-wise {confidence:.0%}). *Equivalent* within ±δ: both one-sided tests of TOST reject (its p is "
             "the larger one-sided p); *better*/*worse*: the paired t-test rejects no difference (its two-sided "
             "1 − α/m interval excludes 0); else *inconclusive* (inside the noise of this many seeds). Costs are "
             "compared as ratios (log ratio per seed, δ as a ratio). A cost on IID data at the fixed budget depends "
             "on the shard sizes and the profiles, not on the weights: it is the same on every seed, *deterministic "
             "given the profiles*, reported as a value with no interval and no p. Accuracy intervals in the tables "
             "are logit intervals (inside [0, 1]).", ""]
    lines += _power_lines(f, table, summary)
    left = degenerate(f, summary)
    registered = table[table["family"] != "non_iid"]
    compared = list(dict.fromkeys(zip(registered["a"], registered["b"])))
    lines += _answer(registered, compared, target, budget)
    if compared:
        lines += ["## Who the compared plans are", "",
                  "Plans at the same node count differ in who holds data and who serves: data owners train on their "
                  "own shard, servers hold trunk stages and no data, aggregators average branches.", "",
                  "| plan | data owners | servers | aggregators |", "|---|---|---|---|"]
        for name in dict.fromkeys(n for p in compared for n in p):
            r = summary[summary["name"] == name]
            if not r.empty and "data_owners" in r:
                r = r.iloc[0]
                lines.append(f"| {name} | {int(r['data_owners'])} | {int(r['servers'])} | {int(r['aggregators'])} |")
        lines.append("")
    if left:
        lines += [f"Left out of the FPL-against-X families: {', '.join(left)} — one branch, so sl (or mp) with an "
                  "adapter, not a flexible hybrid.", ""]
    headings = {"rounds_to_target": f"## Equal accuracy: rounds to reach {target:g} (ratio, δ = {cost_d:.0%})",
                "bytes_to_target": f"## Equal accuracy: bytes sent to reach {target:g} (ratio, δ = {cost_d:.0%})",
                "energy_to_target": f"## Equal accuracy: energy to reach {target:g} (ratio, δ = {cost_d:.0%})",
                "time_to_target": f"## Equal accuracy: makespan to reach {target:g} (ratio, δ = {cost_d:.0%})",
                "accuracy": f"## Fixed budget: accuracy after {budget} (δ = {acc_d:.3f})",
                "bytes": f"## Fixed budget: bytes sent in {budget} (ratio, δ = {cost_d:.0%})",
                "energy": f"## Fixed budget: energy in {budget} (ratio, δ = {cost_d:.0%})",
                "non_iid": f"## Non-IID data: Dirichlet(α) minus IID accuracy after {budget}, same plan (δ = "
                           f"{acc_d:.3f}; plans with one data owner left out: their data is the same under both)"}
    for family, heading in headings.items():
        part = table[table["family"] == family]
        for group, mine in part.groupby("group", sort=False):
            title = heading if family == "non_iid" else f"{heading} — {group}"
            lines += [title, "", f"m = {len(mine)} comparisons.", ""]
            lines += [_claim(family, c) + (_robust(sensitivity, c["a"], c["b"], ROBUST[family]) if family in ROBUST
                                           else "") for _, c in mine.iterrows()]
            lines.append("")
    lines += _sensitivity_lines(sensitivity)
    fpl = summary[summary["strategy"] == "fpl"]
    if not fpl.empty:
        lines += [f"## Model size (deterministic: no seed changes it; \"modest\" means at most "
                  f"+{f.get('size_delta', 0.1):.0%})", ""]
        for junction, ratio in fpl.groupby("junction")["model_params_ratio_mean"].max().items():
            word = "modest" if ratio - 1 <= f.get("size_delta", 0.1) else "not modest"
            lines.append(f"- **junction {junction}**: the deployed model is at most {ratio:.3f}× the original "
                         f"(+{100 * (ratio - 1):.1f} %) — **{word}** (deterministic: no seed changes it, no interval or p)")
        lines.append("")
    return lines
