"""The cost ledger: the event stream of a run, priced per round, node and kind of work.

:func:`price` turns the events of a run (real, from :func:`fplstudy.train.engine.train`, or analytic, from
:func:`fplstudy.costs.dryrun.dry_run`) into a tidy table; :func:`totals` sums it into the cost figures of
``metrics.json``; :func:`write_ledger_csv` writes it atomically.

Schema of the ledger (one row per round × node × kind; rows sorted by round, plan node order, kind):

==================  =======  ========================================================================
column              type     meaning
==================  =======  ========================================================================
round               int      communication round, 0-based
node                str      node name (``n0``, ``n1``, …)
role                str      the node's role in the plan (:attr:`fplstudy.plans.plan.Node.role`: ``branch0/stage0``,
                             ``trunk/stage1``, ``trunk/stage0+aggregator``, ``aggregator``)
device              str      the node's device profile
kind                str      ``forward``, ``backward`` (compute); ``activations``, ``gradients``,
                             ``labels``, ``params_up``, ``params_down`` (messages the node sent or
                             received); ``relay`` (on a topology: others' messages the node forwards
                             because its topology node is on their path); ``idle`` (waiting). Only
                             kinds that occurred, plus ``idle`` for every node in every round
count               int      compute calls, or messages sent + received (relay: forwarded), of that kind
flops               int      FLOPs computed (FlopCounterMode's count, FLOP = 2 MAC); 0 for messages
bytes_tx            int      payload bytes sent (numel × element size, no framing)
bytes_rx            int      payload bytes received
seconds             float    compute: FLOPs / device FLOP/s + the device's call overhead (default 0;
                             with per-block rates, Σ block FLOPs / block FLOP/s, plus each block's
                             fixed seconds per call where given: :func:`fplstudy.costs.pricing.price_compute`;
                             a call that starts cold — its node received a message since
                             its previous call of the same phase, or it is the node's first
                             of that phase in the round — takes 1 + the device's
                             cold_factor times that plus its cold_s,
                             :func:`fplstudy.costs.pricing.cold_calls`; the call
                             that opens a batch on the node feeding it in adds
                             the device's batch_s, :func:`fplstudy.costs.pricing.opens_batch`;
                             a straggler's: its slowdown times that, :func:`fplstudy.costs.pricing.slowdowns`);
                             message: bits / link rate + latency (on a topology: bits / the
                             path's slowest rate + Σ latency, or with forwarding=message Σ over
                             its hops, store-and-forward), counted at the sender *and* at
                             the receiver (both radios are busy);
                             idle: round makespan − the time the node computed (union of its
                             compute intervals in the schedule, :mod:`fplstudy.costs.makespan`):
                             waiting, and sending or receiving (the board stays on while the radio works)
energy_j            float    compute: active W × seconds (a straggler's: its slowdown times it); message: the
                             radio's tx W × airtime (bits / rate) at the sender, rx W × airtime at the
                             receiver (on a topology: of their own hops; a plan node that relays it gets a
                             ``relay`` row: both of its hops' joules and the bytes in bytes_tx and
                             bytes_rx, no seconds: :func:`fplstudy.costs.pricing.message_pricer`);
                             idle: the board's idle W × seconds (its radio's power is the message rows')
round_makespan_s    float    wall-clock length of the round (same on every row of the round)
run_id              str      in ``ledger.csv`` only: the run's id (:func:`fplstudy.train.results.run_id`)
==================  =======  ========================================================================

Sums that hold: Σ bytes_tx = Σ bytes_rx = bytes of all messages over the message kinds
(:data:`fplstudy.plans.events.TRANSFER_KINDS`;
``relay`` rows add the bytes forwarded, once out and once in);
Σ flops = the run's training FLOPs; per node and round, seconds of compute + idle = round makespan when its
compute calls do not overlap (a node's board is priced for every second of the round: active W while it
computes, idle W otherwise; its radio adds tx or rx W while a message is on the air).

Speed: :func:`price` takes a fast path by default (:class:`Pricer`: a one-pass schedule per round and
array sums, the same floats as the event-by-event reference, which ``price(..., fast=False)`` keeps);
:func:`fplstudy.costs.dryrun.price_plan` prices a plan without building its event stream at all.

Prices: the rules live in :mod:`fplstudy.costs.pricing` (a compute call, a message, cold calls, link
direction), for every path. The config
key ``network`` says how messages share the network (:mod:`fplstudy.costs.makespan`): ``links``, a link per
pair of nodes, or ``star``, one interface per node (priced by the reference schedule only).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fplstudy.costs.makespan import (
    TASK_COMPUTE,
    TASK_DATA,
    TASK_DOWN,
    TASK_UP,
    fast_path_applies,
    schedule_fixed_order,
    schedule_round,
)
from fplstudy.costs.memory import memory_rows, model_size
from fplstudy.costs.pricing import (
    chunk,
    cold_calls,
    cold_entries,
    cold_flow,
    cold_keys,
    message_pricer,
    opens_batch,
    price_call,
    prices_cold,
    slowdowns,
)
from fplstudy.facts.profiles import Profiles, check_profiles
from fplstudy.paths import honour_umask
from fplstudy.plans.dynamics import plan_turnouts
from fplstudy.plans.events import KINDS, Compute, Event
from fplstudy.plans.program import everyone

COLUMNS = ("round", "node", "role", "device", "kind", "count", "flops", "bytes_tx", "bytes_rx", "seconds",
           "energy_j", "round_makespan_s")


def _event_prices(plan, events: list[Event], profiles: Profiles, turnouts=None
                  ) -> tuple[list[int], list[float], list[tuple]]:
    """FLOPs, seconds and energy of every event: a compute's ``(energy_j,)``, a message's ``(tx_j, rx_j,
    relays)`` (:func:`message_pricer`). A straggler's compute takes its slowdown times the seconds and the
    joules (:func:`slowdowns` of ``turnouts``, the plan's :func:`fplstudy.plans.dynamics.plan_turnouts`)."""
    message = message_pricer(plan, profiles)
    slow = slowdowns(turnouts)
    nodes = {n.name: n for n in plan.nodes}
    devices = {n.name: profiles.device(n.device) for n in plan.nodes}
    cache: dict[tuple, tuple[int, tuple]] = {}
    cold = cold_calls(events, frozenset(devices)) if prices_cold(devices.values()) else [False] * len(events)
    first = plan.block_names[0]
    flops, seconds, energy = [], [], []
    for ev, starts_cold in zip(events, cold):
        if isinstance(ev, Compute):
            key = (ev.blocks, ev.in_shape, ev.phase, ev.input_grad)
            if key not in cache:
                cache[key] = chunk(plan, ev)
            f, s, e = price_call(plan.model, devices[ev.node], cache[key], ev.samples, starts_cold,
                                  opens_batch(ev, first))
            factor = slow.get(ev.round, {}).get(ev.node)
            if factor is not None:
                s, e = s * factor, e * factor
            flops.append(f)
            seconds.append(s)
            energy.append((e,))
        else:
            s, tx_j, rx_j, relays = message(ev.nbytes, nodes[ev.src], nodes[ev.dst])
            flops.append(0)
            seconds.append(s)
            energy.append((tx_j, rx_j, relays))
    return flops, seconds, energy


def event_costs(plan, events: list[Event], profiles: Profiles) -> tuple[list[int], list[float]]:
    """FLOPs and seconds of every event (messages: seconds of the transfer).

    Returns:
        ``(flops, seconds)``, one entry per event.
    """
    flops, seconds, _ = _event_prices(plan, events, profiles, plan_turnouts(plan))
    return flops, seconds


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def price(plan, events: list[Event], profiles: Profiles | None = None, pipeline: str | None = None,
          fast: bool = True) -> pd.DataFrame:
    """Price an event stream into the ledger (schema in the module docstring).

    Args:
        plan: the plan that produced the events.
        events: the run's events, in emission order.
        profiles: device and link profiles; None = ``check_profiles(plan)`` (shipped + ``profiles_file``).
        pipeline: ``sequential``/``gpipe``/``1f1b``; None = ``plan.config.pipeline``.
        fast: schedule and sum with :class:`Pricer` (one pass per round, arrays); False = the reference,
            event by event (:func:`fplstudy.costs.makespan.schedule_round`). Both give the same ledger (the
            fast path falls back to the reference where its schedule check fails).

    Returns:
        The ledger as a DataFrame with columns :data:`COLUMNS`.
    """
    profiles = profiles or check_profiles(plan)
    if fast:
        pricer = Pricer(plan, profiles, pipeline)
        if pricer.applies:
            ledger = pricer.price_events(events)
            if ledger is not None:
                return ledger
    devices = {n.name: profiles.device(n.device) for n in plan.nodes}
    turnouts = plan_turnouts(plan)
    flops, seconds, energy = _event_prices(plan, events, profiles, turnouts)
    by_round: dict[int, list[int]] = defaultdict(list)
    for i, ev in enumerate(events):
        by_round[ev.round].append(i)
    acc: dict[tuple, list] = {}  # (round, node, kind) -> [count, flops, tx, rx, seconds, energy]

    def add(key, count, f, tx, rx, s, e):
        row = acc.setdefault(key, [0, 0, 0, 0, 0.0, 0.0])
        row[0] += count
        row[1] += f
        row[2] += tx
        row[3] += rx
        row[4] += s
        row[5] += e

    makespans: dict[int, float] = {}
    schedules: dict[tuple, object] = {}  # rounds without a sync repeat the same events: schedule once
    for rnd, ids in sorted(by_round.items()):
        evs = [events[i] for i in ids]
        turnout = turnouts[rnd] if turnouts is not None else everyone(plan, rnd)
        signature = (tuple(tuple(ev.__dict__.values())[1:] for ev in evs),  # every field but the round
                     turnout.slow, turnout.wait_s)
        if signature not in schedules:
            schedules[signature] = schedule_round(plan, evs, [seconds[i] for i in ids], pipeline, turnout.wait_s)
        sched = schedules[signature]
        makespans[rnd] = sched.makespan_s
        busy: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for j, i in enumerate(ids):
            ev, s = events[i], seconds[i]
            span = (sched.start[j], sched.finish[j])
            if isinstance(ev, Compute):
                add((rnd, ev.node, ev.phase), 1, flops[i], 0, 0, s, energy[i][0])
                busy[ev.node].append(span)
            else:
                tx_j, rx_j, relays = energy[i]
                add((rnd, ev.src, ev.kind), 1, 0, ev.nbytes, 0, s, tx_j)
                add((rnd, ev.dst, ev.kind), 1, 0, 0, ev.nbytes, s, rx_j)
                for relay, relay_j in relays:  # forwards it: its bytes both ways, its joules, no seconds
                    add((rnd, relay, "relay"), 1, 0, ev.nbytes, ev.nbytes, 0.0, relay_j)
        for n in plan.nodes:
            if n.name not in turnout.engaged:
                continue  # absent, or resting with no part in the round: it waits for nothing
            idle = max(0.0, sched.makespan_s - _union_length(busy.get(n.name, [])))
            add((rnd, n.name, "idle"), 0, 0, 0, 0, idle, devices[n.name].idle_w * idle)

    order = {n.name: i for i, n in enumerate(plan.nodes)}
    kind_order = {k: i for i, k in enumerate(KINDS)}
    rows = []
    for (rnd, node, kind) in sorted(acc, key=lambda k: (k[0], order[k[1]], kind_order[k[2]])):
        count, f, tx, rx, s, e = acc[(rnd, node, kind)]
        n = plan.node(node)
        rows.append((rnd, node, n.role, n.device, kind, count, f, tx, rx, s, e, makespans[rnd]))
    return _frame(rows)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype({"round": "int64", "count": "int64", "flops": "int64", "bytes_tx": "int64",
                      "bytes_rx": "int64", "seconds": "float64", "energy_j": "float64",
                      "round_makespan_s": "float64"})


_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
_IDLE = _KIND_INDEX["idle"]
_RELAY = _KIND_INDEX["relay"]


@dataclass
class Template:
    """A run of events (a step's batch, a relay, a sync) in compact form, without round and step.

    Attributes:
        tasks: the schedule's tasks (:func:`fplstudy.costs.makespan.schedule_fixed_order`), one per event.
        key: ledger entry of each cost share, ``node * len(KINDS) + kind`` (a compute: one share; a
            message: the sender's, then the receiver's, then each relay's ``relay`` share on a topology), in
            event order.
        flops, tx, rx, seconds, energy: the shares (int64, int64, int64, float64, float64).
        busy_node, busy_task: the node each compute interval belongs to and the task it is (what is left of
            the round is the node's ``idle`` row).
    """

    tasks: list[tuple]
    key: np.ndarray
    flops: np.ndarray
    tx: np.ndarray
    rx: np.ndarray
    seconds: np.ndarray
    energy: np.ndarray
    busy_node: np.ndarray
    busy_task: np.ndarray


class Pricer:
    """The fast path of :func:`price`: events become compact :class:`Template` s, a round is a list of
    ``(step, template)`` segments, scheduled in one pass (:func:`fplstudy.costs.makespan.schedule_fixed_order`)
    and summed with array operations in the reference's order (the same floats, sums included).

    Attributes:
        applies: whether the fast schedule may serve this plan's pipeline at all.
    """

    def __init__(self, plan, profiles: Profiles, pipeline: str | None = None) -> None:
        self.plan = plan
        self.pipeline = pipeline or plan.config.pipeline
        self.applies = fast_path_applies(plan, self.pipeline)
        self.message = message_pricer(plan, profiles)
        self.names = [n.name for n in plan.nodes]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.devices = [profiles.device(n.device) for n in plan.nodes]
        self.idle_w = np.array([d.idle_w for d in self.devices], dtype=float)
        self.cold = prices_cold(self.devices)  # whether a call that starts cold costs more: see entries
        self.resources: dict[tuple[str, str], int] = {}  # links; node i is resource i
        self._chunks: dict[tuple, tuple[int, tuple]] = {}
        self._flows: dict = {}  # a run's (lead, ends) of cold_flow, by the caller's key for it (entries)

    @property
    def n_resources(self) -> int:
        return len(self.names) + len(self.resources)

    def entries(self, runs: list[list[Event]], keys: list | None = None) -> list[frozenset[tuple[str, str]]]:
        """The ``entry`` of each of a round's runs of events, in order, for :meth:`template`: the ``(node, phase)`` s
        cold before the run (:func:`cold_entries`); all empty where no
        device prices a call that starts cold. ``keys``: one per run, under which its flow is kept for the
        next call that passes the same key (runs that recur, as :func:`fplstudy.costs.dryrun.price_rounds`' items)."""
        if not self.cold:
            return [frozenset()] * len(runs)
        every = cold_keys(self.names)
        flows = []
        for evs, key in zip(runs, keys or [None] * len(runs)):
            flow = self._flows.get(key) if key is not None else None
            if flow is None:
                flow = cold_flow(evs, every)[1:]
                if key is not None:
                    self._flows[key] = flow
            flows.append(flow)
        return cold_entries(flows, frozenset(self.names))

    def template(self, events: list[Event], slow: dict[str, float] | None = None,
                 entry: frozenset[tuple[str, str]] | None = None) -> Template:
        """The compact form of ``events`` (priced by :func:`price_compute` and :func:`message_pricer`, as
        :func:`event_costs` prices them), ``slow``: ``{node: slowdown}`` of the round's stragglers, ``entry``:
        the ``(node, phase)`` s cold before these (:meth:`entries`; None: every one, as at the round's start)."""
        message, nodes, width = self.message, self.plan.nodes, len(KINDS)
        if self.cold:
            cold = cold_flow(events, cold_keys(self.names) if entry is None else entry)[0]
        else:
            cold = [False] * len(events)
        tasks, key, flops, tx, rx, sec, energy, busy_node, busy_task = [], [], [], [], [], [], [], [], []
        first = self.plan.block_names[0]
        for j, ev in enumerate(events):
            if isinstance(ev, Compute):
                a = self.index[ev.node]
                ck = (ev.blocks, ev.in_shape, ev.phase, ev.input_grad)
                if ck not in self._chunks:
                    self._chunks[ck] = chunk(self.plan, ev)
                f, s, e = price_call(self.plan.model, self.devices[a], self._chunks[ck], ev.samples, cold[j],
                                      opens_batch(ev, first))
                if slow and ev.node in slow:
                    s, e = s * slow[ev.node], e * slow[ev.node]
                tasks.append((TASK_COMPUTE, ev.micro, a, -1, a if s != 0.0 else -1, s, ev.phase == "backward"))
                key.append(a * width + _KIND_INDEX[ev.phase])
                flops.append(f)
                tx.append(0)
                rx.append(0)
                sec.append(s)
                energy.append(e)
                busy_node.append(a)
                busy_task.append(j)
                continue
            a, b = self.index[ev.src], self.index[ev.dst]
            s, tx_j, rx_j, relays = message(ev.nbytes, nodes[a], nodes[b])
            res = -1
            if s != 0.0:
                res = self.resources.setdefault((ev.src, ev.dst), len(self.names) + len(self.resources))
            typ = TASK_DATA if ev.micro != -1 else (TASK_UP if ev.kind == "params_up" else TASK_DOWN)
            tasks.append((typ, ev.micro, a, b, res, s, False))
            k = _KIND_INDEX[ev.kind]
            key += [a * width + k, b * width + k]
            flops += [0, 0]
            tx += [ev.nbytes, 0]
            rx += [0, ev.nbytes]
            sec += [s, s]
            energy += [tx_j, rx_j]
            for relay, relay_j in relays:  # as the reference adds them (price): no seconds, not busy
                key.append(self.index[relay] * width + _RELAY)
                flops.append(0)
                tx.append(ev.nbytes)
                rx.append(ev.nbytes)
                sec.append(0.0)
                energy.append(relay_j)
        return Template(tasks, np.array(key, dtype=np.int64), np.array(flops, dtype=np.int64),
                        np.array(tx, dtype=np.int64), np.array(rx, dtype=np.int64), np.array(sec, dtype=float),
                        np.array(energy, dtype=float), np.array(busy_node, dtype=np.int64),
                        np.array(busy_task, dtype=np.int64))

    def price_round(self, segments: list[tuple[int, Template]], engaged: frozenset[str] | None = None,
                    wait_s: float = 0.0) -> tuple | None:
        """Sums of one round: ``(present, count, flops, tx, rx, seconds, energy, makespan)``, the arrays
        indexed by ledger entry (``node * len(KINDS) + kind``); None when the fast schedule does not hold.
        Idle time is priced for the nodes of ``engaged`` only (None: every node), ``wait_s`` is the round's
        deadline wait (see :class:`fplstudy.plans.dynamics.Turnout`)."""
        sched = schedule_fixed_order(self.plan, [(step, t.tasks) for step, t in segments], self.n_resources,
                                     self.pipeline, wait_s)
        if sched is None:
            return None
        n, width = len(self.names), len(KINDS)
        size = n * width
        temps = [t for _, t in segments]
        offsets = np.cumsum([0] + [len(t.tasks) for t in temps[:-1]])
        key = np.concatenate([t.key for t in temps])
        count = np.bincount(key, minlength=size)
        flops, tx, rx = (np.zeros(size, dtype=np.int64) for _ in range(3))
        np.add.at(flops, key, np.concatenate([t.flops for t in temps]))
        np.add.at(tx, key, np.concatenate([t.tx for t in temps]))
        np.add.at(rx, key, np.concatenate([t.rx for t in temps]))
        # bincount adds the weights in array order: the reference's order of ``+=``
        seconds = np.bincount(key, weights=np.concatenate([t.seconds for t in temps]), minlength=size)
        energy = np.bincount(key, weights=np.concatenate([t.energy for t in temps]), minlength=size)
        start, finish = sched.start, sched.finish
        node = np.concatenate([t.busy_node for t in temps])
        task = np.concatenate([t.busy_task + o for t, o in zip(temps, offsets)])
        union = _union_lengths(node, start[task], finish[task], n)
        makespan = sched.makespan_s
        idle = np.array([max(0.0, makespan - u) for u in union.tolist()])
        waits = np.ones(n, dtype=bool) if engaged is None else np.array([m in engaged for m in self.names])
        idle[~waits] = 0.0
        seconds[_IDLE::width] = idle
        energy[_IDLE::width] = self.idle_w * idle
        present = count > 0
        present[_IDLE::width] = waits
        return present, count, flops, tx, rx, seconds, energy, makespan

    def ledger(self, rounds: list[tuple | None]) -> pd.DataFrame:
        """The ledger from each round's :meth:`price_round` (in round order, rounds 0, 1, …; None: a lost
        round, which has no rows)."""
        width = len(KINDS)
        parts = []
        for rnd, priced in enumerate(rounds):
            if priced is None:
                continue
            present, count, flops, tx, rx, seconds, energy, makespan = priced
            idx = np.flatnonzero(present)
            parts.append((np.full(len(idx), rnd), idx, count[idx], flops[idx], tx[idx], rx[idx], seconds[idx],
                          energy[idx], np.full(len(idx), makespan)))
        if not parts:
            return _frame([])
        rnd, idx, count, flops, tx, rx, seconds, energy, makespan = (np.concatenate(c) for c in zip(*parts))
        node_i, kind_i = idx // width, idx % width
        nodes = self.plan.nodes
        return pd.DataFrame({
            "round": rnd.astype(np.int64),
            "node": np.array(self.names, dtype=object)[node_i],
            "role": np.array([n.role for n in nodes], dtype=object)[node_i],
            "device": np.array([n.device for n in nodes], dtype=object)[node_i],
            "kind": np.array(KINDS, dtype=object)[kind_i],
            "count": count, "flops": flops, "bytes_tx": tx, "bytes_rx": rx,
            "seconds": seconds, "energy_j": energy, "round_makespan_s": makespan,
        }, columns=list(COLUMNS))

    def totals(self, rounds: list[tuple]) -> dict:
        """The ledger parts of :func:`totals` (``flops_total``, ``bytes_total``, ``energy_j``,
        ``energy_j_max_node``, ``makespan_s``; :func:`plan_totals` gives the rest) straight from :meth:`price_round`'s sums, without building
        the ledger: the sums run over the ledger's rows in its order (``energy_j_max_node`` adds each node's
        rows one after another where pandas' groupby compensates, so it may differ in the last bits)."""
        width = len(KINDS)
        energy, flops, sent, makespans = [], 0, 0, []
        per_node = np.zeros(len(self.names))
        rounds = [r for r in rounds if r is not None]  # lost rounds cost nothing
        for present, _count, f, tx, _rx, _seconds, e, makespan in rounds:
            idx = np.flatnonzero(present)
            energy.append(e[idx])
            flops += int(f.sum())
            sent += int(tx.sum() - tx[_RELAY::width].sum())
            per_node += e.reshape(-1, width).sum(axis=1)
            makespans.append(makespan)
        return {"flops_total": flops, "bytes_total": sent,
                "energy_j": float(np.concatenate(energy).sum()) if energy else 0.0,
                "energy_j_max_node": float(per_node.max()) if rounds and len(per_node) else 0.0,
                "makespan_s": float(np.array(makespans, dtype=float).sum())}

    def price_events(self, events: list[Event]) -> pd.DataFrame | None:
        """The ledger of an event stream (rounds 0.. in order, a round without events lost); None when a
        round's fast schedule fails."""
        by_round: dict[int, list[Event]] = defaultdict(list)
        for ev in events:
            by_round[ev.round].append(ev)
        turnouts = plan_turnouts(self.plan)
        rounds: list[tuple | None] = []
        for rnd in range(max(by_round, default=-1) + 1):
            if not by_round.get(rnd):
                if turnouts is None or not turnouts[rnd].lost:
                    return None  # rounds without events that the plan does not lose: leave them to the reference
                rounds.append(None)
                continue
            segments: list[tuple[int, list[Event]]] = []
            for ev in by_round[rnd]:
                if not segments or segments[-1][0] != ev.step:
                    segments.append((ev.step, []))
                segments[-1][1].append(ev)
            t = turnouts[rnd] if turnouts is not None else everyone(self.plan, rnd)
            entries = self.entries([evs for _, evs in segments])
            priced = self.price_round([(step, self.template(evs, dict(t.slow), entry))
                                       for (step, evs), entry in zip(segments, entries)], t.engaged, t.wait_s)
            if priced is None:
                return None
            rounds.append(priced)
        return self.ledger(rounds)


def _union_lengths(node: np.ndarray, a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """:func:`_union_length` of every node's intervals at once, with the same floats (sorted by start
    then end, pieces added one after another)."""
    out = np.zeros(n)
    if not len(node):
        return out
    order = np.lexsort((b, a, node))
    node, a, b = node[order], a[order], b[order]
    bounds = np.flatnonzero(np.diff(node)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(node)]):
        bs = b[lo:hi]
        end = np.empty(hi - lo)
        end[0] = -np.inf
        np.maximum.accumulate(bs[:-1], out=end[1:])
        piece = np.where(bs > end, bs - np.maximum(a[lo:hi], end), 0.0)
        out[node[lo]] = np.add.accumulate(piece)[-1]
    return out


def totals(plan, ledger: pd.DataFrame) -> dict:
    """The cost totals of a run, for ``metrics.json``.

    Args:
        plan: the plan.
        ledger: its priced ledger (:func:`price`, or read back from ``ledger.csv``).

    Returns:
        ``flops_total``, ``bytes_total`` (every message once: ``relay`` rows left out), ``energy_j`` (all nodes),
        ``energy_j_max_node`` (the node that spent most), ``makespan_s`` (sum over rounds),
        ``memory_bytes_max_node`` (peak, :func:`fplstudy.costs.memory.peak_memory`), ``model_params``,
        ``model_params_ratio`` and ``params_stored_total`` (:func:`fplstudy.costs.memory.model_size`).
    """
    per_node = ledger.groupby("node")["energy_j"].sum()
    # the first makespan of every round, in round order (what groupby("round").first() gives), summed alike
    _, first = np.unique(ledger["round"].to_numpy(), return_index=True)
    makespans = pd.Series(ledger["round_makespan_s"].to_numpy()[first], dtype="float64")
    return {
        "flops_total": int(ledger["flops"].sum()),
        "bytes_total": int(ledger["bytes_tx"].to_numpy()[(ledger["kind"] != "relay").to_numpy()].sum()),
        "energy_j": float(ledger["energy_j"].sum()),
        "energy_j_max_node": float(per_node.max()) if len(per_node) else 0.0,
        "makespan_s": float(makespans.sum()),
        **plan_totals(plan),
    }


def plan_totals(plan) -> dict:
    """The totals that depend on the plan alone, not on its ledger (the same for every placement and
    profile): ``memory_bytes_max_node``, ``model_params``, ``model_params_ratio``, ``params_stored_total``."""
    size = model_size(plan)
    return {"memory_bytes_max_node": int(max(row[-1] for row in memory_rows(plan))),
            "model_params": size["model_params"], "model_params_ratio": size["model_params_ratio"],
            "params_stored_total": size["params_stored_total"]}


def write_ledger_csv(ledger: pd.DataFrame, path: str | Path) -> Path:
    """Write the ledger to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        honour_umask(fd)
        with os.fdopen(fd, "w", newline="") as fh:
            ledger.to_csv(fh, index=False, float_format="%.17g")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_ledger_csv(path: str | Path) -> pd.DataFrame:
    """Read a ledger written by :func:`write_ledger_csv` back with its column types."""
    return pd.read_csv(path, dtype={"node": str, "role": str, "device": str, "kind": str})
