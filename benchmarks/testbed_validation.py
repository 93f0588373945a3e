"""Validation of the cost model on the emulated testbed: predicted against measured, per plan and node.

Runs every strategy at several node counts and link rates on digits with ``--backend emulated`` (root and
Mininet needed, see ``fplstudy.testbed.emulation``), after calibrating this machine as the testbed runs it (as many
processes at once as the plan has hosts, ``--concurrency hosts``, the default; or as many as it computes at
once on average, ``--concurrency plan``: its predicted compute seconds over its predicted makespan, which
measured no better, README; in a tight loop since a node's
chunks between two messages run
back to back, or each call after ``--after-wait`` seconds idle; with ``--cpu dilate`` each call timed by its
CPU seconds, which that mode stretches; at the batch size and at ``--fit-batch``, so that each block gets fixed
seconds per call and a partial batch is priced below a full one's rate: one calibration per number of processes,
``profiles-<processes>.yaml``; and cut steps whose every block call follows ``--cold-wait`` seconds idle: how
much slower such calls run prices every compute call that starts cold, after a receive or opening a node's
round, ``cold_factor``; and the batch's own work outside the calls, ``batch_s``),
and prints per run the median
absolute error of the round makespan and of the per-node busy seconds (warm-up round left out), then
the same over all runs against the goal (both <= 15 %). Writes, under ``--out``: one run folder per plan,
``validation.csv`` (one row per run), ``validation_summary.json``, ``validation_parity.png`` (every
run's points in one figure) and ``validation_calls.csv`` (every compute call after the warm-up, measured beside
predicted, from each run's ``testbed_calls.csv``). Every run is also priced without each part of the model
in :data:`ABLATIONS` (every call warm; no batch work) on the same measurements: ``validation.csv`` has their
errors per run (``*_error_warm_only``, ``*_error_no_batch_work``), and the summary their medians over all
node-rounds with a Wilcoxon signed-rank test of the paired busy errors (does the part make them smaller?).

The full study is six strategies × 2, 4, 8 nodes × two link rates (``centralized`` runs on its one node:
32 runs, about half an hour on 2 cores); ``--nodes 2,4 --rates 10`` is a small one. Measurements share the machine with whatever else
runs on it: the load average before and after each run is in ``validation.csv``; rerun on a quiet
machine before quoting the figures.

With ``--topology FILE`` (a topology file or a shipped one's name) every run is on that site instead of
the uniform links of ``--rates``: its nodes' devices, each link its own shaped pair of directions, relays
as routers (``fplstudy.testbed.emulation``, *On a topology*); a run whose plan has more nodes than the site is listed
as not run.

Out of sample (a model, a dataset, a batch size and links no rule of the model was designed on):
``--dataset mnist5k --model lenet5 --batch-size 64 --rates 5,50``.

Run: ``python benchmarks/testbed_validation.py --out runs/validation [--strategies fl,mp] [--nodes 2,4,8]
[--rates 10,100 | --topology FILE] [--cpu cfs|dilate] [--concurrency plan|hosts] [--rounds 3] [--batch-size 128]
[--fit-batch 32] [--cold-wait 0.05] [--after-wait 0] [--profiles host.yaml]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
import yaml
from scipy.stats import wilcoxon

from fplstudy.config import ConfigError, load_config
from fplstudy.costs.dryrun import dry_run, shard_sizes
from fplstudy.facts.profiles import Profiles
from fplstudy.plans.plan import resolve
from fplstudy.plans.strategies import STRATEGIES
from fplstudy.testbed.calibrate import calibrate
from fplstudy.testbed.run import run_emulated
from fplstudy.testbed.validation import error_summary, predicted, relative_error
from fplstudy.train.distributed import DistributedError
from fplstudy.views.style import save_figure
from fplstudy.views.testbed import parity_figure


def link_profiles(rates_mbit: list[str]) -> dict:
    """One link profile ``tb<rate>`` per rate: that many Mbit/s of TCP goodput both ways, no latency."""
    src = {"status": "E", "source": "testbed validation setting"}
    return {f"tb{r}": {"description": f"validation link, {r} Mbit/s both ways (TCP goodput), no latency",
                       "up_bps": {"value": float(r) * 1e6, **src}, "down_bps": {"value": float(r) * 1e6, **src},
                       "radio": "wired", "tx_w": {"value": 0.0, **src}, "rx_w": {"value": 0.0, **src}}
            for r in rates_mbit}


ABLATIONS = {"warm_only": {"cold_factor": 0.0, "cold_s": 0.0}, "no_batch_work": {"batch_s": 0.0}}  # fields zeroed


def repriced(values: dict, res, fields: dict) -> pd.DataFrame:
    """The run's table (measured beside predicted) with the prediction of the same emulation but every device's
    ``fields`` set as given (:data:`ABLATIONS`: every call priced warm, ``cold_factor`` and ``cold_s`` 0; no batch
    work, ``batch_s`` 0): the model without that part, on the same measurements."""
    emu = res.emulation
    devices = {k: replace(d, **fields) for k, d in emu.profiles.devices.items()}
    emu0 = replace(emu, profiles=Profiles(devices, emu.profiles.links))
    plan = resolve(load_config(None, values))
    per_node, makespan = predicted(plan, shard_sizes(plan), emu0)
    t = res.table.drop(columns=["predicted_busy_s", "predicted_round_s"])
    t = t.merge(per_node[["round", "node", "predicted_busy_s"]], on=["round", "node"], how="left")
    return t.merge(makespan.reset_index(), on="round", how="left").fillna({"predicted_busy_s": 0.0})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the runs and the tables (new or empty)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--nodes", default="2,4,8")
    ap.add_argument("--rates", default="10,100", help="link rates, Mbit/s (before the time scale)")
    ap.add_argument("--topology", help="run every plan on this topology (file or shipped name) instead of --rates")
    ap.add_argument("--cpu", default="cfs", choices=["cfs", "dilate"], help="the config key testbed_cpu")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per run; round 0 is the warm-up")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--dataset", default="digits", help="the dataset of every run (an out-of-sample check: mnist5k)")
    ap.add_argument("--model", default="cnn", help="the model of every run, calibrated as such (e.g. lenet5)")
    ap.add_argument("--profiles", help="an existing calibration file (default: calibrate now)")
    ap.add_argument("--after-wait", type=float, default=0.0, metavar="S",
                    help="calibrate with S seconds of idle before each call (default 0: the tight-loop rate, as a "
                         "node's chunks between two messages run)")
    ap.add_argument("--cold-wait", type=float, default=0.05, metavar="S",
                    help="calibrate how much slower a call that starts cold runs, with S seconds of idle before it "
                         "(fplstudy calibrate --cold-wait; default 0.05; 0: do not, every call priced warm)")
    ap.add_argument("--concurrency", default="hosts", choices=["hosts", "plan"],
                    help="processes that compete in the calibration: hosts (default): one per host; plan: as many as "
                         "the plan computes at once on average (predicted compute seconds of all nodes / predicted "
                         "makespan, priced with a one-process calibration, rounded, 1..hosts)")
    ap.add_argument("--fit-batch", type=int, default=32, metavar="B",
                    help="also calibrate at batch B and fit each block's fixed seconds per call (fplstudy calibrate "
                         "--fit-batch), so that partial batches are priced below a full one's rate; 0: do not")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / "links.yaml"  # the validation's link profiles (and --profiles' devices, if given)
    doc = yaml.safe_load(Path(args.profiles).read_text()) if args.profiles else {}
    doc.setdefault("links", {}).update(link_profiles(args.rates.split(",")))
    base.write_text(yaml.safe_dump(doc, sort_keys=False))
    how = f"each call after {args.after_wait:g} s idle" if args.after_wait else "in a tight loop"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          + (f"calibration from {args.profiles}" if args.profiles else
             f"calibrated with as many processes at once as "
             f"{'the plan computes at once' if args.concurrency == 'plan' else 'the plan has hosts'}, {how}"))
    calibrations: dict[int, tuple[Path, dict]] = {}  # processes -> (profiles file, calibration row)

    def calibration(hosts: int) -> tuple[Path, dict]:
        """The profiles file calibrated with ``hosts`` processes at once: this machine as the testbed runs it."""
        if args.profiles:
            return base, {}
        if hosts not in calibrations:
            path = out / f"profiles-{hosts}.yaml"
            path.write_text(base.read_text())
            row = calibrate(path, models=[args.model], batch_size=args.batch_size, seconds=10.0, wait_s=args.after_wait,
                            processes=hosts, clock="cpu" if args.cpu == "dilate" else "wall",
                            fit_batch=args.fit_batch or None, cold_wait_s=args.cold_wait,
                            dataset=args.dataset)[0]  # keeps the links; the runs' own samples
            fixed = sum(row.get("block_call_s", {}).values())
            print(f"calibrated with {hosts} processes at once: {row['flops_per_s']:.4g} FLOP/s, "
                  f"{1e6 * row['call_overhead_s']:.0f} us per call"
                  + (f", blocks' fixed seconds per call summing to {1e6 * fixed:.0f} us (fit through batch "
                     f"{args.fit_batch})" if args.fit_batch else "")
                  + (f", a cold call {row['cold_factor']:.2f} times slower"
                     if "cold_factor" in row else ""), flush=True)
            calibrations[hosts] = (path, row)
        return calibrations[hosts]

    def concurrency(values: dict, hosts: int) -> int:
        """How many of the plan's nodes compute at once, on average: its predicted compute seconds (all nodes,
        all rounds) over its predicted makespan, priced with the one-process calibration; rounded, 1..hosts."""
        one, _ = calibration(1)
        ledger = dry_run(load_config(None, {**values, "profiles_file": str(one)})).ledger
        compute = float(ledger.loc[ledger["kind"].isin(["forward", "backward"]), "seconds"].sum())
        makespan = float(ledger.groupby("round")["round_makespan_s"].first().sum())
        return max(1, min(hosts, round(compute / makespan)))

    rows, tables = [], []
    for strategy in args.strategies.split(","):
        sizes = [1] if strategy == "centralized" else list(map(int, args.nodes.split(",")))  # one node, by definition
        for nodes in sizes:
            for mbit in args.rates.split(",") if not args.topology else ["nan"]:
                name = f"{strategy}-{nodes}-" + (f"{mbit}mbit" if not args.topology else Path(args.topology).stem)
                values = dict(strategy=strategy, nodes=nodes, link=f"tb{mbit}", rounds=args.rounds,
                              batch_size=args.batch_size, profiles_file=str(base), testbed_cpu=args.cpu,
                              dataset=args.dataset, model=args.model)
                if args.topology:
                    values |= {"topology": args.topology, "link": "wifi5"}  # link: unused on a topology
                try:
                    hosts = len(resolve(load_config(None, values)).nodes)  # the plan alone: no data read
                    k = hosts if args.concurrency == "hosts" or args.profiles else concurrency(values, hosts)
                    path, cal = calibration(k)
                    values["profiles_file"] = str(path)
                    load0, t0 = os.getloadavg()[0], time.monotonic()
                    res = run_emulated(load_config(None, values), out / name)
                except (ConfigError, DistributedError) as exc:
                    print(f"{name:22} not run: {exc}")
                    rows.append(dict(run=name, strategy=strategy, nodes=nodes, link_mbit=float(mbit), status=str(exc)))
                    continue
                s = res.summary
                without = {a: repriced(values, res, fields) for a, fields in ABLATIONS.items()}
                s0 = {a: error_summary(t) for a, t in without.items()}
                rows.append(dict(run=name, strategy=strategy, nodes=nodes, link_mbit=float(mbit), status="completed",
                                 hosts=len(res.emulation.nodes), time_scale=s["time_scale"],
                                 makespan_error=s["round_makespan_median_abs_error"],
                                 busy_error=s["busy_median_abs_error"], send_error=s["send_median_abs_error"],
                                 **{f"{k}_error_{a}": s0[a][f"{m}_median_abs_error"] for a in ABLATIONS
                                    for k, m in (("makespan", "round_makespan"), ("busy", "busy"))},
                                 calibrated_flops_per_s=s["calibrated_flops_per_s"],
                                 calibrated_call_s=s["calibrated_call_s"], calibration_processes=cal.get("processes"),
                                 concurrency=args.concurrency,
                                 load_before=load0, load_after=os.getloadavg()[0], wall_s=time.monotonic() - t0))
                tables.append((name, res.table, without))
                print(f"{name:22} {len(res.emulation.nodes)} hosts ({k} calibrated at once), time scale {s['time_scale']:5.2f}: makespan error "
                      f"{100 * s['round_makespan_median_abs_error']:5.1f} %, busy error "
                      f"{100 * s['busy_median_abs_error']:5.1f} % ("
                      + ", ".join(f"{a}: {100 * s0[a]['round_makespan_median_abs_error']:.1f} %, "
                                  f"{100 * s0[a]['busy_median_abs_error']:.1f} %" for a in ABLATIONS)
                      + f") (load {load0:.1f})", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "validation.csv", index=False)
    done = df[df["status"] == "completed"]
    if done.empty:
        print("no run completed")
        return 1

    def errors(ablation: str | None) -> tuple[pd.Series, pd.Series]:  # over every run's rounds after the warm-up
        every = pd.concat([(table if ablation is None else without[ablation]).assign(run=name)
                           for name, table, without in tables])
        every = every[~every["warmup"].astype(bool)]
        rounds = every.groupby(["run", "round"])[["measured_round_s", "predicted_round_s"]].first()
        makespan = relative_error(rounds["measured_round_s"], rounds["predicted_round_s"]).abs()
        return makespan, relative_error(every["measured_busy_s"], every["predicted_busy_s"]).abs()

    makespan, busy = errors(None)
    ablated = {}
    for a in ABLATIONS:  # the same node-rounds, paired: does the part make the busy error smaller?
        m0, b0 = errors(a)
        paired = (busy != b0).any()
        test = wilcoxon(busy.to_numpy(), b0.to_numpy()) if paired else None
        ablated[a] = {"makespan_median_abs_error": float(m0.median()), "busy_median_abs_error": float(b0.median()),
                      "busy_smaller_with_it": float((busy < b0).mean()),
                      "busy_wilcoxon_p": float(test.pvalue) if test is not None else None}
    summary = {"runs": int(len(done)), "not_run": int(len(df) - len(done)), "cpu": args.cpu,
               "makespan_median_abs_error": float(makespan.median()), "busy_median_abs_error": float(busy.median()),
               "makespan_points": int(len(makespan)), "busy_points": int(len(busy)), "goal": 0.15,
               "cold_wait_s": args.cold_wait, **ablated,
               "per_strategy": {st: {"makespan": float(g["makespan_error"].median()), "busy": float(g["busy_error"].median())}
                                for st, g in done.groupby("strategy")}}
    (out / "validation_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    save_figure(parity_figure([t[:2] for t in tables]), out / "validation_parity.png")
    calls = pd.concat([pd.read_csv(out / name / "testbed_calls.csv").assign(run=name) for name, *_ in tables])
    calls = calls[calls["round"] > 0].merge(done[["run", "strategy"]], on="run")
    calls["ratio"] = calls["measured_s"] / calls["predicted_s"]
    calls.to_csv(out / "validation_calls.csv", index=False)
    print("measured / predicted seconds per compute call (median, warm-up left out), by the calls the model takes "
          "to start cold or not:")
    for (strategy, cold), g in calls.groupby(["strategy", "cold"], sort=False):
        print(f"  {strategy:12} {'cold' if cold else 'warm'}: {g['ratio'].median():.2f} "
              f"(quartiles {g['ratio'].quantile(0.25):.2f}-{g['ratio'].quantile(0.75):.2f}, {len(g)} calls)")
    print(f"over {summary['runs']} runs: median abs error of the round makespan {100 * summary['makespan_median_abs_error']:.1f} % "
          f"({summary['makespan_points']} rounds), of busy seconds {100 * summary['busy_median_abs_error']:.1f} % "
          f"({summary['busy_points']} node-rounds); goal <= 15 %: "
          + ("met" if max(summary["makespan_median_abs_error"], summary["busy_median_abs_error"]) <= 0.15 else "not met")
          + "".join(f"; the same runs, {a}: {100 * v['makespan_median_abs_error']:.1f} %, "
                    f"{100 * v['busy_median_abs_error']:.1f} % (busy error smaller with the part in "
                    f"{100 * v['busy_smaller_with_it']:.0f} % of node-rounds, Wilcoxon signed-rank p = "
                    f"{v['busy_wilcoxon_p'] if v['busy_wilcoxon_p'] is None else format(v['busy_wilcoxon_p'], '.2g')})"
                    for a, v in ablated.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
