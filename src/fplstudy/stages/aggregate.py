"""DVC stage ``aggregate``: the study's run folders into per-seed, per-plan, per-round and per-node tables,
learning curves and the headline metrics."""

from __future__ import annotations

import argparse
import sys

from fplstudy.config import StudyError
from fplstudy.stages import output_problem
from fplstudy.study.params import load_study
from fplstudy.study.tables import aggregate, write_aggregate


def main(argv: list[str] | None = None) -> int:
    """Write the tables into ``--out``; exit 2 with one line when a run or the params are missing, or when
    ``--out`` cannot be written (before any run is read)."""
    parser = argparse.ArgumentParser(prog="python -m fplstudy.stages.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--runs", required=True, help="folder of run folders")
    parser.add_argument("--out", required=True, help="folder for the tables")
    args = parser.parse_args(argv)
    refusal = output_problem("--out", args.out, folder=True)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        study = load_study(args.params)
        for path in write_aggregate(study, aggregate(study, args.runs), args.out):
            print(path)
    except (FileNotFoundError, StudyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
