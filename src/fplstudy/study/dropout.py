"""The dropout sweep: how each strategy degrades when edge nodes drop out (issue 13, part 4).

DVC stage ``dynamics`` (``python -m fplstudy.study.dropout --params params.yaml --out results/dynamics``). The
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

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fplstudy.config import Config, ConfigError, make_config
from fplstudy.train.results import atomic_write_text
from fplstudy.train.runner import prepare
from fplstudy.study.stats import describe, errorbar, paired
from fplstudy.study.params import KERNELS, StudyError, load_params, read_runs, run_complete, train_runs

METRICS = ("test_acc_mean", "test_acc_worst", "energy_j", "energy_j_max_node", "makespan_s", "rounds_lost",
           "branches_per_round")


@dataclass(frozen=True)
class Sweep:
    """The validated ``dynamics:`` block of ``params.yaml``."""

    train: dict[str, Any]
    strategies: dict[str, dict[str, Any]]
    dropout: tuple[float, ...]
    seeds: tuple[int, ...]
    workers: int
    kernels: str
    fpl: str
    accuracy_delta: float
    confidence: float

    def runs(self, out: str | Path) -> list[tuple[dict[str, Any], int, Path, Config]]:
        """``(columns, seed, run folder, config)`` of every run, strategy by strategy, rate by rate, seed by seed."""
        out = Path(out) / "runs"
        rows = []
        for strategy, keys in self.strategies.items():
            for p in self.dropout:
                for seed in self.seeds:
                    cfg = make_config({**self.train, **keys, "strategy": strategy, "dropout": p, "seed": seed})
                    rows.append(({"strategy": strategy, "nodes": cfg.nodes, "dropout": p}, seed,
                                 out / strategy / f"p{p:g}" / f"seed-{seed}", cfg))
        return rows


def _fail(where: str, value: Any, fix: str) -> StudyError:
    return StudyError(f"params.yaml: dynamics.{where}: got {value!r}; {fix}")


def load_sweep(params: dict[str, Any]) -> Sweep:
    """Validate the ``dynamics:`` block and every run's config (one line naming the entry, before any work)."""
    block = params.get("dynamics")
    if not isinstance(block, dict):
        raise StudyError("params.yaml: dynamics: give the dropout sweep's block (train, strategies, dropout, seeds)")
    train = block.get("train") or {}
    if not isinstance(train, dict):
        raise _fail("train", train, "give a mapping of config keys")
    for key in train:
        if key not in Config.model_fields or key in ("strategy", "seed", "dropout", "dropout_trace"):
            raise _fail(f"train.{key}", train[key], "not a shared config key here (strategies, seeds and the rates "
                                                    "have their own entries; `fplstudy keys` lists the keys)")
    strategies = block.get("strategies")
    if not isinstance(strategies, dict) or not strategies or not all(isinstance(v, dict) for v in strategies.values()):
        raise _fail("strategies", strategies, "give {strategy: {config keys}}, e.g. {fl: {nodes: 8}}")
    rates = block.get("dropout")
    if (not isinstance(rates, list) or 0 not in rates or len(set(rates)) != len(rates)
            or not all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1 for p in rates)):
        raise _fail("dropout", rates, "give distinct probabilities in [0, 1), 0 among them (the baseline)")
    seeds = block.get("seeds")
    if (not isinstance(seeds, list) or len(seeds) < 2 or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise _fail("seeds", seeds, "give at least two distinct seeds (an interval needs two), e.g. [0, 1, 2, 3, 4]")
    fpl = block.get("fpl", "fpl")
    if fpl not in strategies or len(strategies) < 2:
        raise _fail("fpl", fpl, f"name the strategy compared with the others; strategies: {', '.join(strategies)}")
    kernels = block.get("kernels", "avx2")
    if kernels not in KERNELS:
        raise _fail("kernels", kernels, f"use one of {', '.join(KERNELS)}")
    workers = block.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise _fail("workers", workers, "give an integer >= 1 (runs at once; results do not depend on it)")
    delta, confidence = block.get("accuracy_delta", 0.02), block.get("confidence", 0.95)
    if not isinstance(delta, (int, float)) or not 0 <= delta < 1:
        raise _fail("accuracy_delta", delta, "give the equivalence margin of accuracy, a fraction in [0, 1)")
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise _fail("confidence", confidence, "give the family-wise confidence, in (0, 1)")
    sweep = Sweep(dict(train), {s: dict(k) for s, k in strategies.items()}, tuple(float(p) for p in sorted(rates)),
                  tuple(seeds), workers, kernels, fpl, float(delta), float(confidence))
    for strategy, keys in sweep.strategies.items():
        try:
            prepare(make_config({**sweep.train, **keys, "strategy": strategy, "dropout": max(sweep.dropout),
                                 "seed": sweep.seeds[0]}))
        except (ConfigError, FileNotFoundError) as exc:
            raise StudyError(f"params.yaml: dynamics.strategies.{strategy}: {' '.join(str(exc).split())}") from None
    return sweep


def train_sweep(sweep: Sweep, out: str | Path, log=None) -> list[dict[str, Any]]:
    """Train the runs not yet complete for the same config and code (an interrupted stage resumes)."""
    todo = [(cfg, folder, f"{cols['strategy']} p={cols['dropout']:g} seed {seed}")
            for cols, seed, folder, cfg in sweep.runs(out) if not run_complete(folder, cfg)]
    return train_runs(todo, workers=sweep.workers, kernels=sweep.kernels, log=log, label="dynamics")


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


def comparisons(sweep: Sweep, seeds: pd.DataFrame) -> pd.DataFrame:
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
              f"seed over {len(sweep.seeds)} seeds (paired t-interval, Bonferroni over {len(table)} comparisons, "
              f"family-wise {sweep.confidence:.0%}; 'equivalent' within ±{sweep.accuracy_delta:g}). Topology: "
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


def figure(seeds: pd.DataFrame, confidence: float):
    """Accuracy, energy and makespan against the dropout rate, one line per strategy, the tables' intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from fplstudy.views.style import MARKERS, PALETTE

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
    for ax, (metric, label) in zip(axes, [("test_acc_mean", "test accuracy"), ("energy_j", "energy (J, all nodes)"),
                                          ("makespan_s", "makespan (s)")]):
        sns.pointplot(data=seeds, x="dropout", y=metric, hue="strategy", ax=ax, errorbar=errorbar(confidence),
                      palette={s: PALETTE[s] for s in seeds["strategy"].unique()}, markers=[
                          MARKERS[s] for s in seeds["strategy"].unique()], dodge=0.3, capsize=0.1)
        ax.set(xlabel="dropout probability per edge node and round", ylabel=label)
        if metric != "test_acc_mean":
            ax.set_yscale("log")  # mp's costs fall by orders of magnitude as its rounds are lost
        if ax is not axes[0]:
            ax.get_legend().remove()
    fig.suptitle(f"{len(seeds['seed'].unique())} seeds, {confidence:.0%} t-intervals")
    return fig


def run_sweep(params: dict[str, Any], out: str | Path, log=None) -> dict[str, Any]:
    """The whole stage: validate, train what is missing, write the tables, the findings and the figure."""
    from fplstudy.views.style import save_figure

    sweep = load_sweep(params)
    out = Path(out)
    train_sweep(sweep, out, log)
    seeds = seed_table(sweep, out)
    summary = summary_table(seeds, sweep.confidence)
    table = comparisons(sweep, seeds)
    for name, frame in (("seeds.csv", seeds), ("summary.csv", summary), ("comparisons.csv", table)):
        atomic_write_text(out / name, frame.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    atomic_write_text(out / "findings.md", findings_text(sweep, table, summary))
    save_figure(figure(seeds, sweep.confidence), out / "dropout.png")
    return {"seeds": seeds, "summary": summary, "comparisons": table}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fplstudy.study.dropout --params params.yaml --out results/dynamics``."""
    parser = argparse.ArgumentParser(prog="python -m fplstudy.study.dropout", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="YAML file with a top-level dynamics: section")
    parser.add_argument("--out", required=True, help="folder for the runs, tables, findings.md and dropout.png")
    args = parser.parse_args(argv)
    try:
        res = run_sweep(load_params(args.params), args.out)
    except (StudyError, ConfigError, ValueError) as exc:
        print("fplstudy.study.dropout: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    verdicts = json.dumps(res["comparisons"]["verdict"].value_counts().to_dict())
    print(f"{len(res['seeds'])} runs; verdicts {verdicts}; wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
