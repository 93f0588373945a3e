"""Engine overhead: the same model on the same samples, a bare PyTorch loop vs the engine's plans.

Trains the default cnn on digits for ROUNDS epochs, batch 32, SGD, evaluating once per epoch, four
ways: a bare loop, ``centralized``, ``mp`` with 4 stages and ``fl`` with 4 clients (each client sees a
quarter of the samples, so every way processes the same number of samples). Prints each way's wall
time (median of TRIALS, interleaved) and its ratio to the bare loop. Target: <= 1.15.

Run: ``make bench`` or ``python benchmarks/engine_overhead.py [ROUNDS] [TRIALS]``.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from fplstudy.config import load_config
from fplstudy.facts.models import build_model
from fplstudy.facts.partition import load_partitioned
from fplstudy.plans.plan import resolve
from fplstudy.train.engine import train
from fplstudy.train.runner import set_threads


def bare_loop(split, rounds: int, seed: int = 0) -> float:
    """The reference: one model, one optimizer, shuffled batches, evaluation every epoch."""
    torch.manual_seed(seed)
    model = build_model("cnn", split.input_shape, split.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    n = len(split.y_train)
    t0 = time.perf_counter()
    for _epoch in range(rounds):
        perm = torch.randperm(n)
        for i in range(0, n, 32):
            idx = perm[i:i + 32]
            loss = F.cross_entropy(model(split.x_train[idx]), split.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            model.eval()
            (model(split.x_test).argmax(1) == split.y_test).float().mean()
            model.train()
    return time.perf_counter() - t0


def engine_run(strategy: str, nodes: int, rounds: int) -> float:
    plan = resolve(load_config(None, {"strategy": strategy, "nodes": nodes, "rounds": rounds}))
    data = load_partitioned(plan)
    t0 = time.perf_counter()
    train(plan, data=data)
    return time.perf_counter() - t0


def main(rounds: int = 5, trials: int = 3) -> None:
    set_threads(load_config(None).threads)  # the threads every fplstudy run uses (config default: 1)
    split, _ = load_partitioned(resolve(load_config(None, {"strategy": "centralized", "nodes": 1})))
    ways = {
        "bare PyTorch loop": lambda: bare_loop(split, rounds),
        "centralized (1 node)": lambda: engine_run("centralized", 1, rounds),
        "mp (4 stages)": lambda: engine_run("mp", 4, rounds),
        "fl (4 clients)": lambda: engine_run("fl", 4, rounds),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(trials):
        for name, fn in ways.items():
            times[name].append(fn())
    base = statistics.median(times["bare PyTorch loop"])
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {rounds} epochs, median of {trials} trials")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:24} {med:7.2f} s   ratio to bare loop {med / base:5.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
