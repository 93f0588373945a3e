"""The emulated testbed measured against the model: each rank's trace read into measured round makespans and busy
seconds, the same plan priced with the emulated profiles, and the tables and errors that compare them."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from fplstudy.costs.dryrun import plan_events
from fplstudy.costs.ledger import event_costs, price
from fplstudy.costs.pricing import cold_calls
from fplstudy.plans.events import Compute
from fplstudy.plans.plan import Plan
from fplstudy.testbed.emulation import Emulation

TESTBED_COLUMNS = ("round", "node", "warmup", "measured_round_s", "predicted_round_s", "measured_busy_s",
                   "predicted_busy_s", "measured_send_s", "predicted_send_s", "measured_recv_s", "predicted_recv_s",
                   "time_scale")
CALL_COLUMNS = ("round", "node", "phase", "blocks", "samples", "cold", "measured_s", "predicted_s")

# --------------------------------------------------------------------------- measured vs predicted

def read_traces(folder: Path, plan: Plan) -> pd.DataFrame:
    """Every rank's trace (:data:`fplstudy.train.distributed.TRACE_COLUMNS`), one table."""
    frames = [pd.read_csv(folder / f"trace-{r}.csv", dtype={"peer": str}) for r in range(len(plan.nodes))]
    df = pd.concat(frames, ignore_index=True)
    df["peer"] = df["peer"].fillna("").astype(str)
    return df


def measured(trace: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Per round and node: busy compute seconds, seconds of its sent and received messages; per round: makespan.

    A message's seconds run from when both ends were ready (the later of the send's and the receive's
    posting) to its arrival; they count at the sender (send) and at the receiver (recv), as in the
    ledger. The round's makespan runs from the first chunk's start to the last chunk's end or the last
    message's arrival, over all nodes.
    """
    comp = trace[trace["op"] == "compute"]
    sends = trace[trace["op"] == "send"][["round", "node", "peer", "kind", "seq", "post_s"]]
    recvs = trace[trace["op"] == "recv"][["round", "node", "peer", "kind", "seq", "post_s", "end_s"]]
    msgs = recvs.merge(sends, left_on=["peer", "node", "seq"], right_on=["node", "peer", "seq"],
                       suffixes=("_rx", "_tx"))
    if len(msgs) != len(recvs) or len(msgs) != len(sends) or (msgs["kind_rx"] != msgs["kind_tx"]).any():
        raise RuntimeError("the traces' sends and receives do not pair up")
    msgs["seconds"] = msgs["end_s"] - np.maximum(msgs["post_s_rx"], msgs["post_s_tx"])
    msgs = msgs.rename(columns={"round_rx": "round", "node_rx": "dst", "peer_rx": "src"})
    busy = comp.assign(seconds=comp["end_s"] - comp["post_s"]).groupby(["round", "node"])["seconds"].sum()
    sent = msgs.groupby(["round", "src"])["seconds"].sum().rename_axis(["round", "node"])
    got = msgs.groupby(["round", "dst"])["seconds"].sum().rename_axis(["round", "node"])
    per_node = pd.DataFrame({"measured_busy_s": busy, "measured_send_s": sent, "measured_recv_s": got}).fillna(0.0)
    first = comp.groupby("round")["post_s"].min()
    last = pd.concat([comp.groupby("round")["end_s"].max(), msgs.groupby("round")["end_s"].max()], axis=1).max(axis=1)
    return per_node.reset_index(), (last - first).rename("measured_round_s")


def predicted(plan: Plan, shard_sizes: list[int], emu: Emulation) -> tuple[pd.DataFrame, pd.Series]:
    """The model's figures for the same plan priced with the emulated profiles, in the units of :func:`measured`:
    on the uniform site with the ``star`` network (one interface per node, as the testbed's bridge gives); on a
    topology with the ``inbox`` network on the emulated topology (each pair's path its own, as each host has a
    link per neighbour, and a message moves once its receive is posted, as the distributed backend runs: what
    several paths share is not modelled)."""
    if emu.site is None:
        plan = replace(plan, config=plan.config.model_copy(update={"network": "star"}))  # the testbed's network
    else:
        plan = replace(plan, config=plan.config.model_copy(update={"network": "inbox"}), site=emu.site)
    events = plan_events(plan, shard_sizes)
    _, seconds = event_costs(plan, events, emu.profiles)
    rows = []
    for ev, sec in zip(events, seconds):
        if isinstance(ev, Compute):
            rows.append((ev.round, ev.node, sec, 0.0, 0.0))
        else:
            rows += [(ev.round, ev.src, 0.0, sec, 0.0), (ev.round, ev.dst, 0.0, 0.0, sec)]
    df = pd.DataFrame(rows, columns=["round", "node", "predicted_busy_s", "predicted_send_s", "predicted_recv_s"])
    per_node = df.groupby(["round", "node"], as_index=False).sum()
    ledger = price(plan, events, emu.profiles)
    makespan = ledger.groupby("round")["round_makespan_s"].first().rename("predicted_round_s")
    return per_node, makespan


def call_table(plan: Plan, trace: pd.DataFrame, shard_sizes: list[int], emu: Emulation) -> pd.DataFrame:
    """Every compute call of the run, measured beside predicted (:data:`CALL_COLUMNS`): where the busy seconds'
    error comes from. ``blocks`` joins the call's blocks with ``+``; ``cold`` is whether the model takes it to
    start cold (:func:`fplstudy.costs.pricing.cold_calls`); ``measured_s`` the trace's chunk (a node's calls in the
    order it made them: its events' order), ``predicted_s`` the call priced with the emulated profiles (its
    ``cold_factor`` included)."""
    events = plan_events(plan, shard_sizes)
    _, seconds = event_costs(plan, events, emu.profiles)
    cold = cold_calls(events, frozenset(n.name for n in plan.nodes))
    comp = trace[trace["op"] == "compute"]
    rows = []
    for node in plan.nodes:
        calls = [(ev, s, c) for ev, s, c in zip(events, seconds, cold) if isinstance(ev, Compute) and ev.node == node.name]
        mine = comp[comp["node"] == node.name].sort_values(["round", "seq"])
        if len(mine) != len(calls) or (mine["kind"].to_numpy() != [ev.phase for ev, _, _ in calls]).any():
            raise RuntimeError(f"node {node.name}'s trace has {len(mine)} compute calls, its events {len(calls)}, "
                               "or they differ in kind")
        took = (mine["end_s"] - mine["post_s"]).to_numpy()
        rows += [(ev.round, ev.node, ev.phase, "+".join(ev.blocks), ev.samples, c, float(m), s)
                 for (ev, s, c), m in zip(calls, took)]
    return pd.DataFrame(rows, columns=list(CALL_COLUMNS))


def testbed_table(plan: Plan, trace: pd.DataFrame, shard_sizes: list[int], emu: Emulation) -> pd.DataFrame:
    """Measured beside predicted, one row per round × node (:data:`TESTBED_COLUMNS`); round 0 is the warm-up
    (first use of every connection and kernel) and is left out of the error summary."""
    m_node, m_round = measured(trace)
    p_node, p_round = predicted(plan, shard_sizes, emu)
    grid = pd.DataFrame([(r, n.name) for r in sorted(p_round.index) for n in plan.nodes], columns=["round", "node"])
    df = grid.merge(m_node, on=["round", "node"], how="left").merge(p_node, on=["round", "node"], how="left")
    df = df.merge(m_round.reset_index(), on="round", how="left").merge(p_round.reset_index(), on="round", how="left")
    df["warmup"] = df["round"] == 0
    df["time_scale"] = emu.time_scale
    return df.fillna(0.0)[list(TESTBED_COLUMNS)]


def relative_error(measured_s: pd.Series, predicted_s: pd.Series) -> pd.Series:
    """(measured − predicted) / predicted, where something was predicted."""
    keep = predicted_s > 0
    return (measured_s[keep] - predicted_s[keep]) / predicted_s[keep]


def error_summary(table: pd.DataFrame) -> dict:
    """Median and largest absolute relative error of the round makespan and of per-node busy seconds (and of
    the message seconds), over the rounds after the warm-up."""
    t = table[~table["warmup"].astype(bool)]
    rounds = t.groupby("round")[["measured_round_s", "predicted_round_s"]].first()
    out = {"rounds_compared": int(len(rounds))}
    for name, m, p in (("round_makespan", rounds["measured_round_s"], rounds["predicted_round_s"]),
                       ("busy", t["measured_busy_s"], t["predicted_busy_s"]),
                       ("send", t["measured_send_s"], t["predicted_send_s"]),
                       ("recv", t["measured_recv_s"], t["predicted_recv_s"])):
        err = relative_error(m, p).abs()
        out[f"{name}_median_abs_error"] = float(err.median()) if len(err) else math.nan
        out[f"{name}_max_abs_error"] = float(err.max()) if len(err) else math.nan
        out[f"{name}_points"] = int(len(err))
    return out
