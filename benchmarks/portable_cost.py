"""What the study's pinned CPU kernels cost: the same runs with this CPU's fastest kernels (``native``) and
pinned to ``avx2`` (the default study's level) and ``sse41`` (every x86-64 CPU), one worker process and
one thread each, interleaved, in one run of this script.

Trains one seed of a few plans of the default study (digits, cnn, 10 rounds) each way and prints each
run's wall time (median of TRIALS) and the ratios to native, then the median ratio over the plans.

Run: ``python benchmarks/portable_cost.py [TRIALS]``.
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
from pathlib import Path

from fplstudy.study.params import load_params, load_study
from fplstudy.study.pool import train_runs

PLANS = ("centralized-1-iid", "mp-4-iid", "fl-4-iid", "sl-4-iid", "fpl-4-adapter-iid")
WAYS = ("native", "avx2", "sse41")


def main(trials: int = 3) -> None:
    the_study = load_study(load_params(Path(__file__).resolve().parents[1] / "params.yaml"))
    plans = [p for p in the_study.plans if p.name in PLANS]
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="fplstudy-portable-") as tmp:
        for trial in range(trials):
            for plan in plans:
                for way in WAYS:  # interleaved: machine load hits every way alike
                    folder = Path(tmp) / f"{plan.name}-{way}-{trial}"
                    [rec] = train_runs([(plan.for_seed(0), folder, plan.name)], workers=1, kernels=way,
                                             log=lambda line: None)
                    times.setdefault((plan.name, way), []).append(rec["wall_s"])
    print(f"{platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"{trials} trials, one worker process and one thread per run")
    print(f"{'plan':<22}" + "".join(f"{w + ' s':>10}" for w in WAYS) + "  avx2/native  sse41/native")
    ratios: dict[str, list[float]] = {w: [] for w in WAYS[1:]}
    for plan in plans:
        med = {w: statistics.median(times[(plan.name, w)]) for w in WAYS}
        for w in WAYS[1:]:
            ratios[w].append(med[w] / med["native"])
        print(f"{plan.name:<22}" + "".join(f"{med[w]:10.2f}" for w in WAYS)
              + f"  {med['avx2'] / med['native']:11.2f}  {med['sse41'] / med['native']:12.2f}")
    print("median over plans: " + ", ".join(f"{w}/native {statistics.median(r):.2f}" for w, r in ratios.items()))


if __name__ == "__main__":  # spawned workers import this module
    main(*(int(a) for a in sys.argv[1:]))
