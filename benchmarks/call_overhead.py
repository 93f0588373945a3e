"""The engine's cost per compute call beside the calibration's: is a small stage's excess on the testbed the
engine's own work?

Trains cnn on digits at batch 128 on the simulated backend (one process, one thread), uncut (``centralized``)
and cut into 2, 4 and 8 stages (``mp``), and prints, per cut, the extra seconds per extra compute call over the
uncut model (fastest of TRIALS, interleaved); beside them the call overhead that ``fplstudy calibrate``
measures with its hand-written loop (``calibrate.measure``, cut step against whole step) in the same run.
The extra call of a cut also moves its activations and gradients in memory, which the engine's figure includes.

Run: ``python benchmarks/call_overhead.py [ROUNDS] [TRIALS]``.
"""

from __future__ import annotations

import platform
import sys
import time

import torch

from fplstudy.config import make_config
from fplstudy.costs.dryrun import plan_events, shard_sizes
from fplstudy.plans.events import Compute
from fplstudy.plans.plan import resolve
from fplstudy.testbed.calibrate import measure
from fplstudy.train.engine import train


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(1)
    plans = {name: resolve(make_config(dict(batch_size=128, rounds=rounds, **kw))) for name, kw in
             [("centralized", dict(strategy="centralized", nodes=1))]
             + [(f"mp-{n}", dict(strategy="mp", nodes=n)) for n in (2, 4, 8)]}
    calls = {name: sum(isinstance(ev, Compute) for ev in plan_events(p, shard_sizes(p))) for name, p in plans.items()}
    best = {name: float("inf") for name in plans}
    for _ in range(trials):  # interleaved: every plan sees the same background load
        for name, plan in plans.items():
            t0 = time.perf_counter()
            train(plan)
            best[name] = min(best[name], time.perf_counter() - t0)
    row = measure("cnn", batch_size=128, seconds=3.0)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, {rounds} rounds of "
          f"digits at batch 128, fastest of {trials}")
    print(f"calibration (hand-written loop): {1e6 * row['call_overhead_s']:.0f} us per call")
    for name in plans:
        if name == "centralized":
            continue
        extra = (best[name] - best["centralized"]) / (calls[name] - calls["centralized"])
        print(f"engine, {name}: {best[name]:.3f} s against {best['centralized']:.3f} s uncut, "
              f"{calls[name] - calls['centralized']} more calls: {1e6 * extra:.0f} us per extra call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
