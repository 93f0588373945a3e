"""DVC stage ``scale``: the trade-off at the paper's scale without the data (dry runs of large models on
CIFAR-10's declared shape; no training): tables, findings and figures of :mod:`fplstudy.study.scale`.

The figures go beside the tables: ``figures/`` is the ``tradeoffs`` stage's output as a whole, and DVC
refuses an output inside another stage's."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fplstudy.config import StudyError
from fplstudy.stages import output_problem
from fplstudy.study.params import ScaleParams, load_scale
from fplstudy.study.scale import (
    crossover_grid,
    crossover_points,
    price_grid,
    scale_findings,
)
from fplstudy.train.results import atomic_write_text
from fplstudy.views.scale import draw_crossover, draw_memory, draw_nodes
from fplstudy.views.style import save_figure


def run_scale(params: ScaleParams, out: str | Path, figures: str | Path) -> dict[str, Any]:
    """Price the study, write its tables, findings and figures.

    Returns:
        ``{"seconds", "costs", "memory", "crossover", "points"}``.
    """
    import matplotlib.pyplot as plt

    t0 = time.perf_counter()
    out, figures = Path(out), Path(figures)
    costs, memory = price_grid(params)
    cross = crossover_grid(params)
    points = crossover_points(cross)
    for name, table in (("costs", costs), ("memory", memory), ("crossover", cross), ("crossover_points", points)):
        atomic_write_text(out / f"{name}.csv", table.to_csv(index=False, float_format="%.17g"))
    atomic_write_text(out / "findings.md", scale_findings(params, costs, memory, points))
    for name, fig in (("bytes_energy_vs_nodes", draw_nodes(costs, params)), ("memory_vs_device", draw_memory(memory, params)),
                      ("crossover", draw_crossover(cross, points, params))):
        save_figure(fig, figures / f"{name}.png")
        if fig is not None:
            plt.close(fig)
    return {"seconds": time.perf_counter() - t0, "costs": costs, "memory": memory, "crossover": cross,
            "points": points}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fplstudy.stages.scale --params params.yaml --out results/scale [--figures FOLDER]``."""
    parser = argparse.ArgumentParser(prog="python -m fplstudy.stages.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="YAML file with a top-level scale: section")
    parser.add_argument("--out", required=True, help="folder for the tables and findings.md")
    parser.add_argument("--figures", help="folder for the PNGs (default: --out)")
    args = parser.parse_args(argv)
    refusal = output_problem("--out", args.out, folder=True) or (
        output_problem("--figures", args.figures, folder=True) if args.figures is not None else None)
    if refusal:
        print(f"fplstudy.stages.scale: error: {refusal}", file=sys.stderr)
        return 2
    try:
        params = load_scale(args.params)
    except StudyError as exc:
        print("fplstudy.stages.scale: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    res = run_scale(params, args.out, args.figures or args.out)
    priced = int((res["costs"]["status"] == "priced").sum())
    print(f"priced {priced} plans ({len(res['costs']) - priced} refused) and {len(res['crossover'])} crossover points "
          f"in {res['seconds']:.1f} s; wrote {args.out}" + (f" and {args.figures}" if args.figures else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
