"""DVC stage ``dynamics``: the dropout sweep of :mod:`fplstudy.study.dropout` (train what is missing, then
the tables, the findings and the figure)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fplstudy.config import StudyError
from fplstudy.stages import output_problem
from fplstudy.study.dropout import (
    findings_text,
    kept_comparisons,
    seed_table,
    summary_table,
    train_sweep,
)
from fplstudy.study.params import load_sweep
from fplstudy.train.results import atomic_write_text
from fplstudy.views.dropout import figure
from fplstudy.views.style import save_figure


def run_sweep(params: dict[str, Any] | str | Path, out: str | Path, log=None, overwrite: bool = False,
              ) -> dict[str, Any]:
    """The whole stage: validate, train what is missing, write the tables, the findings and the figure.
    ``overwrite`` replaces run folders in ``out`` that hold another config's finished run (the DVC stage owns
    ``results/dynamics``)."""
    sweep = load_sweep(params)
    out = Path(out)
    train_sweep(sweep, out, log, overwrite=overwrite)
    seeds = seed_table(sweep, out)
    summary = summary_table(seeds, sweep.confidence)
    table = kept_comparisons(sweep, seeds)
    for name, frame in (("seeds.csv", seeds), ("summary.csv", summary), ("comparisons.csv", table)):
        atomic_write_text(out / name, frame.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    atomic_write_text(out / "findings.md", findings_text(sweep, table, summary))
    save_figure(figure(seeds, sweep.confidence, sweep.train.get("topology", "")), out / "dropout.png")
    return {"seeds": seeds, "summary": summary, "comparisons": table}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fplstudy.stages.dynamics --params params.yaml --out results/dynamics``."""
    parser = argparse.ArgumentParser(prog="python -m fplstudy.stages.dynamics", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="YAML file with a top-level dynamics: section")
    parser.add_argument("--out", required=True, help="folder for the runs, tables, findings.md and dropout.png")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace run folders in --out that hold another config's finished run")
    args = parser.parse_args(argv)
    refusal = output_problem("--out", args.out, folder=True)
    if refusal:
        print(f"fplstudy.stages.dynamics: error: {refusal}", file=sys.stderr)
        return 2
    try:
        res = run_sweep(args.params, args.out, overwrite=args.overwrite)
    except StudyError as exc:
        print("fplstudy.stages.dynamics: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    verdicts = json.dumps(res["comparisons"]["verdict"].value_counts().to_dict())
    print(f"{len(res['seeds'])} runs; verdicts {verdicts}; wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
