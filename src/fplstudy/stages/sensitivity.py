"""DVC stage ``sensitivity``: every run of the study re-priced across its profile numbers' ranges (no training),
and whether the cost verdicts hold across them (:mod:`fplstudy.study.sensitivity`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fplstudy.config import ConfigError, StudyError
from fplstudy.stages import output_problem
from fplstudy.study.findings import plan_pairs
from fplstudy.study.params import load_params, load_study
from fplstudy.study.sensitivity import (
    TO_TARGET_METRICS,
    load_settings,
    nominal_mismatches,
    pair_ratios,
    reprice,
    rounds_run,
    verdicts,
    view_tables,
)
from fplstudy.study.tables import budget_rounds
from fplstudy.train.results import atomic_write_text
from fplstudy.views.sensitivity import figure
from fplstudy.views.style import save_figure

PROG = "python -m fplstudy.stages.sensitivity"


def _csv(table) -> str:
    return table.to_csv(index=False, float_format="%.10g", lineterminator="\n")


def run_stage(params: str | Path, runs: str | Path, ranges: str | Path, out: str | Path) -> dict[str, Any]:
    """Validate, re-price (the fixed budget and, with ``findings.target_acc``, the rounds to the target), check the
    nominal prices against the runs, write the tables and the figure.

    Raises:
        StudyError: bad params, or a run whose nominal re-pricing differs from its ``metrics.json``.
        ConfigError: a bad ranges or profiles file.
        FileNotFoundError: a run without ``metrics.json``.
    """
    doc = load_params(params)
    study = load_study(doc)
    draws, seed = load_settings(doc)
    done = rounds_run(study, runs)
    wrong = nominal_mismatches(reprice(study, ranges, completed=done, nominal_only=True), study, runs)
    if wrong:
        raise StudyError(f"{wrong[0]} ({len(wrong)} totals differ); the runs were priced by other code or profiles: "
                         f"run `dvc repro` to retrain, or re-run this stage on the runs of this code")
    # the fixed budget's verdicts (every run's first min_rounds, unless it diverged before) and the equal-accuracy
    # ones (every run up to the round it reached the target), priced together
    target = study.findings.get("target_acc")
    table, reached = view_tables(study, ranges, runs, budget_rounds(study), None if target is None else float(target),
                                 draws=draws, seed=seed, done=done)
    pairs = plan_pairs(study.findings, table.drop_duplicates("name"))
    delta = float(study.findings.get("cost_delta", 0.0))
    ratios = pair_ratios(table, pairs)
    table_v = verdicts(table, pairs, delta)
    if reached is not None and len(reached):
        ratios = pd.concat([ratios, pair_ratios(reached, pairs, TO_TARGET_METRICS)], ignore_index=True)
        table_v = pd.concat([table_v, verdicts(reached, pairs, delta, TO_TARGET_METRICS)], ignore_index=True)
    out = Path(out)
    atomic_write_text(out / "repriced.csv", _csv(table))
    if reached is not None:
        atomic_write_text(out / "repriced_to_target.csv", _csv(reached))
    atomic_write_text(out / "verdicts.csv", _csv(table_v))
    save_figure(figure(ratios, table_v, table), out / "sensitivity.png")
    return {"repriced": table, "repriced_to_target": reached, "verdicts": table_v}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fplstudy.stages.sensitivity --params params.yaml --runs results/runs --ranges profile_ranges.yaml
    --out results/sensitivity``; exit 2 with one line on a bad input, before any pricing."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="YAML file with the study and a sensitivity: section")
    parser.add_argument("--runs", default="results/runs", help="the study's run folders (the nominal check)")
    parser.add_argument("--ranges", default="profile_ranges.yaml", help="ranges of profile numbers with a spread")
    parser.add_argument("--out", required=True, help="folder for repriced.csv, verdicts.csv and sensitivity.png")
    args = parser.parse_args(argv)
    refusal = output_problem("--out", args.out, folder=True)
    if refusal:
        print(f"{PROG}: error: {refusal}", file=sys.stderr)
        return 2
    try:
        res = run_stage(args.params, args.runs, args.ranges, args.out)
    except (StudyError, ConfigError, FileNotFoundError) as exc:
        print(f"{PROG}: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    v = res["verdicts"]
    for _, row in v.iterrows():
        print(f"{row['a']} vs {row['b']} {row['metric']}: ratio {row['ratio']:.3f} "
              f"[{row['ratio_min']:.3f}, {row['ratio_max']:.3f}] {row['verdict']}, "
              + ("holds" if row["holds"] else f"flips ({row['flips'] or 'Monte Carlo only'}; "
                                              f"{row['mc_flips']}/{row['mc_draws']} draws)"))
    print(f"{len(res['repriced'])} prices; {int(v['holds'].sum())} of {len(v)} verdicts hold; wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
