"""How much longer a call that starts cold takes after a longer wait: the cold price at several idle lengths.

``fplstudy calibrate --cold-wait S`` times a cut step's block calls (short) and a whole step's forward (long), each
after ``S`` seconds of sleep, against the same calls in a tight loop, and the ledger prices every call that starts
cold with that one line (``cold_s`` + ``cold_factor`` × warm seconds) whatever the node waited. On the testbed a
node waits as long as its messages take: an ``mp`` stage about 0.04 s per batch on 100 Mbit/s links, 0.4 s on 10
Mbit/s ones, seconds on LTE. This measures, in one run, :func:`fplstudy.testbed.calibrate.measure_together` at each wait
of ``--waits`` (as many processes at once as ``--processes``, each call timed by its CPU seconds as the testbed's
``dilate`` mode needs), and prints per wait the extra milliseconds of a cold short and long call, the line
through them, and each wait's extras over the first wait's.

With ``--traces DIR`` (a folder ``benchmarks/testbed_validation.py`` wrote) it measures nothing and reads the
testbed's own runs instead: each compute call of ``testbed_calls.csv`` (after the warm-up round) beside the idle
before it in its node's trace (from the end of the node's previous compute call of the round; a round's first
call has none), and prints the measured over predicted seconds of the calls the model prices cold, by their wait,
with Spearman's rank correlation (scipy) of wait and ratio over the calls that waited longer than 0.05 s.

Run: ``python benchmarks/cold_wait.py [--model cnn] [--batch-size 128] [--processes 4] [--waits 0.05,0.5]
[--seconds 6]`` or ``python benchmarks/cold_wait.py --traces DIR``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from fplstudy.testbed.calibrate import measure_together


def extras(row: dict) -> tuple[float, float]:
    """``(ms more per short call, ms more per long call)`` when they start cold: a cut step's block calls
    (``2 k`` of them) and a whole step's forward, after the idle against in a tight loop."""
    calls = 2 * len(row["blocks"])
    return (row["cold_calls_s"] - row["calls_s"]) / calls * 1e3, (row["cold_forward_s"] - row["forward_s"]) * 1e3


def by_wait(folder: Path) -> pd.DataFrame:
    """Every compute call after the warm-up round of every run under ``folder`` (``testbed_calls.csv``) with
    ``idle``: seconds from the end of its node's previous compute call of the round to its start (NaN for a
    round's first), read from the node's trace (``testbed/trace-<node>.csv``, the same calls in the same order)."""
    frames = []
    for run in sorted(p for p in folder.iterdir() if (p / "testbed_calls.csv").is_file()):
        calls = pd.read_csv(run / "testbed_calls.csv")
        for node, own in calls.groupby("node", sort=False):
            trace = pd.read_csv(run / "testbed" / f"trace-{node}.csv")
            comp = trace[trace["op"] == "compute"].reset_index(drop=True)
            if len(comp) != len(own):
                raise SystemExit(f"{run.name}: {node}'s trace has {len(comp)} compute calls, testbed_calls.csv {len(own)}")
            idle = comp["post_s"] - comp["end_s"].shift(1)
            idle[comp["round"] != comp["round"].shift(1)] = float("nan")
            frames.append(own.reset_index(drop=True).assign(idle=idle.to_numpy(), run=run.name))
    if not frames:
        raise SystemExit(f"--traces {folder}: no run folder with testbed_calls.csv under it; give a folder that "
                         "benchmarks/testbed_validation.py wrote")
    calls = pd.concat(frames, ignore_index=True)
    calls = calls[calls["round"] > 0]
    return calls.assign(ratio=calls["measured_s"] / calls["predicted_s"])


def print_by_wait(folder: Path) -> None:
    from scipy.stats import spearmanr

    calls = by_wait(folder)
    cold = calls[calls["cold"].astype(bool) & calls["idle"].notna()]
    cold = cold.assign(wait=pd.cut(cold["idle"], [0, 0.01, 0.05, 0.1, 0.3, 1, float("inf")]),
                       extra_ms=(cold["measured_s"] - cold["predicted_s"]) * 1e3)
    table = cold.groupby("wait", observed=True).agg(calls=("ratio", "size"), measured_over_predicted=("ratio", "median"),
                                                    extra_ms=("extra_ms", "median"))
    print(f"calls priced cold, {len(cold)} in {calls['run'].nunique()} runs, by the idle before them (s); medians:")
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    waited = cold[cold["idle"] > 0.05]
    rho, p = spearmanr(waited["idle"], waited["ratio"])
    print(f"over the {len(waited)} that waited > 0.05 s: Spearman rho of wait and measured / predicted {rho:.3f} (p = {p:.2g})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--processes", type=int, default=4, help="processes at once, as the testbed's hosts (default 4)")
    ap.add_argument("--waits", default="0.05,0.5", help="idle seconds before a cold call, comma-separated")
    ap.add_argument("--seconds", type=float, default=6.0, help="timed training per measurement (default 6)")
    ap.add_argument("--traces", type=Path, help="read a testbed_validation.py folder's runs instead of measuring")
    args = ap.parse_args()
    if args.traces is not None:
        print_by_wait(args.traces)
        return
    waits = [float(w) for w in args.waits.split(",")]
    if not waits or any(not 0 < w <= 10 for w in waits):
        ap.error(f"--waits {args.waits}: give idle seconds > 0 and <= 10, e.g. 0.05,0.5")
    rows = []
    for w in waits:
        row = measure_together(args.model, args.batch_size, args.seconds, processes=args.processes, clock="cpu",
                               cold_wait_s=w)
        short, long_ = extras(row)
        rows.append({"wait_s": w, "short_extra_ms": short, "long_extra_ms": long_, "short_warm_ms":
                     row["calls_s"] / (2 * len(row["blocks"])) * 1e3, "long_warm_ms": row["forward_s"] * 1e3,
                     "cold_factor": row["cold_factor"], "cold_s": row["cold_s"], "flops_per_s": row["flops_per_s"]})
        print(json.dumps(rows[-1]), flush=True)
    first = rows[0]
    for r in rows:
        print(f"wait {r['wait_s']:g} s: a cold short call (warm {r['short_warm_ms']:.2f} ms) {r['short_extra_ms']:.2f} ms "
              f"more, a cold long one (warm {r['long_warm_ms']:.2f} ms) {r['long_extra_ms']:.2f} ms more; the line: "
              f"cold_s {r['cold_s'] * 1e3:.3f} ms + cold_factor {r['cold_factor']:.3f} x warm; over wait "
              f"{first['wait_s']:g} s: {r['short_extra_ms'] / first['short_extra_ms']:.2f}x and "
              f"{r['long_extra_ms'] / first['long_extra_ms']:.2f}x")


if __name__ == "__main__":
    main()
