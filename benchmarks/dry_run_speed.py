"""How long a dry run (events + ledger + totals, no training) takes for a plan.

Usage: ``python benchmarks/dry_run_speed.py [key=value ...]`` (config overrides, e.g. strategy=fl).
Prints the first call (includes one-time imports of the dataset loader and block profiling) and the
median of repeated calls on fresh configs (what a sweep over thousands of plans pays per plan).

Then the plan search's pricing (``fplstudy.costs.search.price_candidate``) on a seeded sample of the plans that
``fplstudy explore`` enumerates for the config's model and ``--nodes`` (default 8): the reference path
(``fast=False``: the period's event stream priced event by event) against the fast path, on the same
plans in the same run, with their ratio. ``--sample N`` (default 100) plans, ``--all`` for every plan.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from fplstudy.config import load_config
from fplstudy.costs.dryrun import dry_run


def _options(argv: list[str]) -> tuple[list[str], dict]:
    opts = {"nodes": 8, "sample": 100, "all": False}
    rest, it = [], iter(argv)
    for arg in it:
        if arg == "--all":
            opts["all"] = True
        elif arg in ("--nodes", "--sample"):
            opts[arg[2:]] = int(next(it))
        else:
            rest.append(arg)
    return rest, opts


def search_pricing(argv: list[str], nodes: int, sample: int | None) -> None:
    """Per-plan time of explore.price, reference against fast, on the same plans in one run."""
    import random

    from fplstudy.costs.search import enumerate_plans, price_candidate

    t0 = time.perf_counter()
    plans, refused = enumerate_plans(load_config(None, argv), nodes)
    enum_s = time.perf_counter() - t0
    chosen = plans if sample is None or sample >= len(plans) else random.Random(0).sample(plans, sample)
    price_candidate(chosen[0])  # warm the caches both paths share (shards, block profiles)
    price_candidate(chosen[0], fast=False)
    per = {}
    for fast in (False, True):
        t0 = time.perf_counter()
        out = [price_candidate(p, fast=fast) for p in chosen]
        per[fast] = ((time.perf_counter() - t0) / len(chosen), out)
    worst = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for a, b in zip(per[True][1], per[False][1])
                for k in b if isinstance(b[k], float))
    before, after = per[False][0], per[True][0]
    print(f"search pricing, {nodes} nodes: {len(plans)} valid plans ({refused} refused) enumerated in "
          f"{enum_s:.1f} s; priced {len(chosen)} of them")
    print(f"  per plan: reference {before * 1e3:.1f} ms, fast {after * 1e3:.2f} ms, ratio {before / after:.1f}x; "
          f"all {len(plans)} plans: {before * len(plans):.1f} s -> {after * len(plans):.1f} s "
          f"(largest relative difference of a total: {worst:.1e})")


def main(argv: list[str]) -> None:
    argv, opts = _options(argv)
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
    search_pricing(argv, opts["nodes"], None if opts["all"] else opts["sample"])
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
