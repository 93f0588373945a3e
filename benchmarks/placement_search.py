"""How many placed plans per minute ``fplstudy explore --search-placement`` prices (issue: at least 10,000 a
minute on this machine for an 8-node plan on a topology).

Usage: ``python benchmarks/placement_search.py [--nodes 8] [--topology fog_wifi] [--max-placements 50]
[--workers 1] [key=value ...]`` (config overrides).

Prints, from one run: the plan shapes enumerated (and the seconds that took), the placements priced
(how many shapes were searched exhaustively, how many sampled), the whole search's plans per minute, and
then, on a seeded sample of 50 of the priced placements, the search's time per placed plan (one shape's
round programs reused, :func:`fplstudy.costs.search.price_placements`) against pricing each placed plan from its
config (``resolve`` + :func:`fplstudy.costs.search.price_candidate`), with their ratio and the largest relative difference
of any cost between the two.
"""

from __future__ import annotations

import random
import sys
import time

from fplstudy.config import load_config, make_config


def _options(argv: list[str]) -> tuple[list[str], dict]:
    opts = {"nodes": 8, "topology": "fog_wifi", "max-placements": 50, "workers": 1}
    rest, it = [], iter(argv)
    for arg in it:
        if arg.startswith("--") and arg[2:] in opts:
            raw = next(it)
            opts[arg[2:]] = raw if arg == "--topology" else int(raw)
        else:
            rest.append(arg)
    return rest, opts


def main(argv: list[str]) -> None:
    from fplstudy.costs.search import explore, placed, price_candidate, price_placements
    from fplstudy.plans.plan import resolve

    rest, opts = _options(argv)
    base = load_config(None, [*rest, f"topology={opts['topology']}"])
    t0 = time.perf_counter()
    res = explore(base, opts["nodes"], cuts="balanced", search_placement=True,
                  max_placements=opts["max-placements"], workers=opts["workers"])
    wall = time.perf_counter() - t0
    plans = res.plans
    shapes = plans["name"].str.split("@").str[0]
    exhaustive = plans.groupby(shapes)["placements_exhaustive"].first()
    print(f"placement search on {opts['topology']}, {opts['nodes']} nodes, balanced cuts, at most "
          f"{opts['max-placements']} placements a shape, {opts['workers']} worker(s):")
    print(f"  {len(exhaustive)} plan shapes ({int(exhaustive.sum())} searched exhaustively, "
          f"{int((~exhaustive).sum())} sampled), {len(plans)} placed plans priced in {wall:.1f} s: "
          f"{len(plans) / wall * 60:,.0f} plans per minute (target 10,000); {len(res.front)} on the front")
    rng = random.Random(0)
    rows = rng.sample(range(len(plans)), min(50, len(plans)))
    configs = [make_config(plans["overrides"][i]) for i in rows]
    ref = [resolve(c) for c in configs]
    price_candidate(ref[0])
    t0 = time.perf_counter()
    slow = [price_candidate(resolve(c)) for c in configs]
    slow_s = (time.perf_counter() - t0) / len(configs)
    fast = []
    for plan in ref:
        shape = resolve(make_config({k: v for k, v in plan.config.model_dump(exclude_defaults=True).items()
                                     if k != "placement"}))
        where = {n.name: n.point for n in plan.nodes}
        assert placed(shape, where).nodes == plan.nodes
        fast += price_placements(shape, [where])
    worst = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for a, b in zip(fast, slow) for k in b
                if isinstance(b[k], float))
    inside = wall / len(plans)
    print(f"  per placed plan: inside the search {inside * 1e3:.2f} ms (enumeration included); each from its "
          f"config (resolve + price) {slow_s * 1e3:.1f} ms; ratio {slow_s / inside:.1f}x; largest relative "
          f"difference of a cost between the two {worst:.1e}")

if __name__ == "__main__":
    main(sys.argv[1:])
