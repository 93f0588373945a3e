"""The dropout sweep: how each strategy degrades when edge nodes drop out.

DVC stage ``dynamics`` (``python -m fplstudy.stages.dynamics --params params.yaml --out results/dynamics``). The
``dynamics:`` block of ``params.yaml`` gives the shared config keys (``train``: a heterogeneous topology),
the strategies and their ``nodes``, the ``dropout`` rates (the probability that an edge-side node is absent
for a round, :mod:`fplstudy.plans.dynamics`), the seeds, and the finding's margin. Every strategy × rate × seed
is trained (the study's workers and pinned kernels, :func:`fplstudy.study.params.train_runs`; runs already
complete for the same config and code are kept, so an interrupted stage resumes) into
``<out>/runs/<strategy>/p<rate>/seed-<s>/``, and the stage writes:

- ``seeds.csv``: one row per run (accuracy, energy, makespan, rounds lost, branches trained per round);
- ``summary.csv``: per strategy and rate, the mean, sd and Student-t interval of every metric over seeds;
- ``comparisons.csv`` and ``findings.md``: the question of the paper's dynamic scenarios, *does FPL degrade
  more gracefully?* An FPL run's **accuracy kept** at rate p is its accuracy at p minus its accuracy at rate 0
  of the same seed (same data, same initial model); FPL's is compared with each other strategy's, paired by
  seed, at every rate above 0 (:func:`fplstudy.study.stats.paired`, Bonferroni over the family of comparisons;
  "equivalent" within ``accuracy_delta``; "inconclusive" otherwise);
- ``dropout.png``: accuracy, energy and makespan against the rate, with the intervals of the tables.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from fplstudy.study.params import Sweep
from fplstudy.study.pool import run_complete, train_runs
from fplstudy.study.stats import describe, paired
from fplstudy.study.tables import read_runs

METRICS = ("test_acc_mean", "test_acc_worst", "energy_j", "energy_j_max_node", "makespan_s", "rounds_lost",
           "branches_per_round")


def train_sweep(sweep: Sweep, out: str | Path, log=None, overwrite: bool = False) -> list[dict[str, Any]]:
    """Train the runs not yet complete for the same config and code (an interrupted stage resumes);
    ``overwrite``: replace folders that hold another config's finished run
    (:func:`fplstudy.study.pool.claim`)."""
    todo = [(cfg, folder, f"{cols['strategy']} p={cols['dropout']:g} seed {seed}")
            for cols, seed, folder, cfg in sweep.runs(out) if not run_complete(folder, cfg)]
    return train_runs(todo, workers=sweep.workers, kernels=sweep.kernels, log=log, label="dynamics",
                      overwrite=overwrite)


def seed_table(sweep: Sweep, out: str | Path) -> pd.DataFrame:
    """One row per run: its columns, the study's metrics, the rounds it lost and the branches per round."""
    runs = sweep.runs(out)
    tables = read_runs([(cols, seed, folder) for cols, seed, folder, _ in runs])
    seeds, rounds = tables["seeds"], tables["rounds"]
    trained = rounds["branches_trained"].fillna("").astype(str).str.split().str.len()
    per_run = rounds.assign(lost=trained == 0, trained=trained).groupby(["strategy", "dropout", "seed"], sort=False)
    extra = per_run.agg(rounds_lost=("lost", "sum"), branches_per_round=("trained", "mean")).reset_index()
    return seeds.merge(extra, on=["strategy", "dropout", "seed"], how="left")[
        ["strategy", "nodes", "dropout", "seed", "status", *METRICS]]


def summary_table(seeds: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Per strategy and rate: ``<metric>_mean``, ``_sd``, ``_ci_low``, ``_ci_high`` over seeds, and ``seeds``."""
    rows = []
    for (strategy, p), part in seeds.groupby(["strategy", "dropout"], sort=False):
        row: dict[str, Any] = {"strategy": strategy, "dropout": p, "seeds": len(part)}
        for metric in METRICS:
            d = describe(part[metric].astype(float), confidence)
            row.update({f"{metric}_{k}": d[k] for k in ("mean", "sd", "ci_low", "ci_high")})
        rows.append(row)
    return pd.DataFrame(rows)


def kept(seeds: pd.DataFrame, strategy: str, p: float) -> dict[int, float]:
    """Seed → accuracy at rate ``p`` minus accuracy at rate 0, of ``strategy``."""
    mine = seeds[seeds["strategy"] == strategy].set_index(["dropout", "seed"])["test_acc_mean"]
    base = mine.xs(0.0, level="dropout")
    at = mine.xs(p, level="dropout")
    return {int(s): float(at[s] - base[s]) for s in at.index if s in base.index}


def kept_comparisons(sweep: Sweep, seeds: pd.DataFrame) -> pd.DataFrame:
    """FPL's accuracy kept against each other strategy's, paired by seed, at every rate above 0."""
    others = [s for s in sweep.strategies if s != sweep.fpl]
    rates = [p for p in sweep.dropout if p > 0]
    m = len(others) * len(rates)
    rows = []
    for p in rates:
        mine = kept(seeds, sweep.fpl, p)
        for other in others:
            c = paired(mine, kept(seeds, other, p), delta=sweep.accuracy_delta, confidence=sweep.confidence,
                       comparisons=m)
            rows.append({"dropout": p, "a": sweep.fpl, "b": other, "metric": "accuracy kept", "n": c.n,
                         "a_kept": sum(mine.values()) / len(mine) if mine else math.nan, "mean_diff": c.mean_diff,
                         "ci_low": c.ci_low, "ci_high": c.ci_high, "level": c.level, "p_value": c.p_value,
                         "verdict": c.verdict})
    return pd.DataFrame(rows)


def findings_text(sweep: Sweep, table: pd.DataFrame, summary: pd.DataFrame) -> str:
    """``findings.md``: one sentence per comparison, the verdict's test named, and the table behind it."""
    lines = [f"# Does {sweep.fpl} degrade more gracefully under dropout?", "",
             (f"Accuracy kept = accuracy at dropout p − accuracy at p = 0, same seed; {sweep.fpl} − other, paired by "
              f"seed over {len(sweep.seeds)} seeds (Bonferroni over {len(table)} comparisons, family-wise "
              f"{sweep.confidence:.0%}: 'equivalent' within ±{sweep.accuracy_delta:g} by TOST, else better or worse by "
              f"the paired t-test, whose interval is shown; the p is the deciding test's). Topology: "
              f"{sweep.train.get('topology', 'uniform')}; the server side never drops out."), ""]
    for _, r in table.iterrows():
        word = {"better": "degrades more gracefully than", "worse": "degrades worse than",
                "equivalent": "degrades as", "inconclusive": "is inconclusive against"}[r["verdict"]]
        lines.append(f"- p = {r['dropout']:g}: {r['a']} {word} {r['b']} (accuracy kept {r['a']} − {r['b']} = "
                     f"{r['mean_diff']:+.3f}, {r['level']:.4g} CI [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], "
                     f"p = {r['p_value']:.3g}, n = {r['n']})")
    lines += ["", "| strategy | dropout | accuracy (CI) | rounds lost | energy J | makespan s |", "|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['strategy']} | {r['dropout']:g} | {r['test_acc_mean_mean']:.3f} "
                     f"[{r['test_acc_mean_ci_low']:.3f}, {r['test_acc_mean_ci_high']:.3f}] | "
                     f"{r['rounds_lost_mean']:.1f} | {r['energy_j_mean']:.4g} | {r['makespan_s_mean']:.4g} |")
    return "\n".join(lines) + "\n"
