"""DVC stage ``check``: validate the active study of ``params.yaml`` (every plan's config, the scale and
dropout sections) before any stage trains; write a constant stamp the train stages depend on. When the study
trains on a Dask cluster (``study.workers`` or ``FPLSTUDY_SCHEDULER`` names a scheduler), the scheduler must
answer too."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fplstudy.config import StudyError
from fplstudy.stages import output_problem
from fplstudy.study.cluster import connect, target
from fplstudy.study.params import (
    CHECKED,
    load_params,
    load_scale,
    load_study,
    load_sweep,
)
from fplstudy.train.results import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    """Exit 0 and write ``--stamp`` when the study is valid; exit 2 with one line naming the entry if not."""
    parser = argparse.ArgumentParser(prog="python -m fplstudy.stages.check", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--stamp", help="write this file (constant text) when the study is valid: the train stages "
                                        "depend on it, so DVC validates params.yaml before any of them runs")
    args = parser.parse_args(argv)
    refusal = output_problem("--stamp", args.stamp) if args.stamp is not None else None
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        params = load_params(args.params)
        study = load_study(params)
        scale = load_scale(params) if "scale" in params else None
        sweep = load_sweep(params) if "dynamics" in params else None
        where = target(None, study.workers)
        if isinstance(where, str):
            connect(where).close()
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"study {study.name}: {len(study.plans)} plans in {len(study.groups)} groups x "
          f"{len(study.seeds)} seeds = {len(study.plans) * len(study.seeds)} runs"
          + (f"; scale: {len(scale.models)} models" if scale else "")
          + (f"; dynamics: {len(sweep.runs('.'))} runs" if sweep else ""))
    if args.stamp:
        Path(args.stamp).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.stamp), CHECKED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
