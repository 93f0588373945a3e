"""How long a dry run (events + ledger + totals, no training) takes for a plan.

Usage: ``python benchmarks/dry_run_speed.py [key=value ...]`` (config overrides, e.g. strategy=fl).
Prints the first call (includes one-time imports of the dataset loader and block profiling) and the
median of repeated calls on fresh configs (what a sweep over thousands of plans pays per plan).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from fplstudy.config import load_config
from fplstudy.dryrun import dry_run


def main(argv: list[str]) -> None:
    cfg = load_config(None, argv)
    t0 = time.perf_counter()
    first = dry_run(cfg)
    cold = time.perf_counter() - t0
    warm = []
    for seed in range(1, 6):
        t0 = time.perf_counter()
        dry_run(load_config(None, [*argv, f"seed={seed}"]))
        warm.append(time.perf_counter() - t0)
    print(f"plan: {first.plan.strategy}, {len(first.plan.nodes)} nodes, {cfg.rounds} rounds, "
          f"{len(first.events)} events, {len(first.ledger)} ledger rows")
    print(f"dry run: first call {cold:.3f} s, then median {statistics.median(warm):.3f} s "
          f"(min {min(warm):.3f} s) over {len(warm)} fresh configs")
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
