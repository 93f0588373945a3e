"""Simulated vs distributed backend: wall time of the same plan on this machine.

Trains one plan with both backends (``fpl`` on 4 nodes, default cnn on digits, ROUNDS rounds, batch
32) and prints each backend's wall time (the simulated one with the default intra-op threads and with
one), the distributed run split into process start-up (fork server, rendezvous) and training, and
the ratio distributed / best simulated. Both backends produce the
same event stream; the distributed run also checks that the bytes on the wire equal the ledger's.

Run: ``python benchmarks/distributed_vs_simulated.py [STRATEGY] [ROUNDS] [MODEL]``, e.g.
``python benchmarks/distributed_vs_simulated.py mp 3 cnn``.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import torch

from fplstudy.config import load_config
from fplstudy.facts.partition import load_partitioned
from fplstudy.plans.plan import resolve
from fplstudy.train.distributed import train_distributed
from fplstudy.train.engine import train
from fplstudy.train.runner import set_threads


def main(strategy: str = "fpl", rounds: int = 3, model: str = "cnn") -> None:
    nodes = 3 if strategy == "fl" else 4  # fl adds its aggregator: 4 processes either way
    plan = resolve(load_config(None, {"strategy": strategy, "nodes": nodes, "rounds": rounds, "model": model}))
    data = load_partitioned(plan)
    print(f"plan: {strategy}, {len(plan.nodes)} node processes, model {plan.model}, "
          f"{sum(len(ix) for ix in data[1].indices)} training samples, {rounds} rounds, batch {plan.config.batch_size}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}; 1 intra-op thread per node process")

    threads = set_threads(0)  # torch's default (config key threads=0)
    walls = {}
    for n in sorted({threads, 1}, reverse=True):  # the default, and one thread as in each node process
        set_threads(n)
        t0 = time.perf_counter()
        sim = train(plan, data=data)
        walls[n] = time.perf_counter() - t0
    set_threads(threads)
    simulated = min(walls.values())

    first: list[float] = []
    t0 = time.perf_counter()
    dist = train_distributed(plan, data=data, on_round=lambda row: first.append(time.perf_counter() - t0))
    distributed = time.perf_counter() - t0
    train_s = dist.rounds[-1]["wall_s"]  # rank 0's clock, from its first step
    assert dist.events == sim.events, "the backends disagree on the event stream"

    for n, wall in walls.items():
        print(f"simulated   {wall:8.2f} s   ({wall / rounds:.2f} s/round, {n} intra-op thread{'s' if n > 1 else ''})")
    print(f"distributed {distributed:8.2f} s   (start-up {distributed - train_s:.2f} s, training {train_s:.2f} s, "
          f"{train_s / rounds:.2f} s/round)")
    print(f"ratio distributed / best simulated: {distributed / simulated:.2f} "
          f"(training only: {train_s / simulated:.2f})")
    print(f"final test accuracy: simulated {sim.rounds[-1]['test_acc_mean']:.4f}, "
          f"distributed {dist.rounds[-1]['test_acc_mean']:.4f}; wire bytes {int(dist.wire['bytes_tx'].sum())}")


if __name__ == "__main__":  # node processes re-import this file: keep the guard
    args = sys.argv[1:]
    main(args[0] if args else "fpl", int(args[1]) if len(args) > 1 else 3, args[2] if len(args) > 2 else "cnn")
