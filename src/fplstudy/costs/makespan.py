"""Makespan: when every event of a round runs, by list scheduling of the event DAG on the plan's nodes.

The event stream (:mod:`fplstudy.plans.events`) says *what* ran; this module decides *when*, given each
event's duration (compute: FLOPs / device FLOP/s; transfer: bits / link rate + latency, see
:mod:`fplstudy.costs.ledger`). Every round is scheduled on its own, from time 0; the run's makespan is
the sum of the rounds' (a round starts when the previous one, sync included, has ended).

Resources. A node computes one chunk at a time; a node may compute while messages travel. How messages
share the network is the config key ``network``:

- ``links``: every directed pair ``src → dst`` has its own link, which carries one message
  at a time; a node may send to (and receive from) several peers at once, each at the full rate;
- ``star`` (the default): every node reaches the others through one half-duplex interface, as a Wi-Fi station reaches
  its access point: a message occupies its sender's and its receiver's interface, and an interface
  carries one message at a time, in or out. An aggregator that sends the model to N clients sends N
  messages one after the other, and a node does not receive while it sends. (TCP shares an interface
  among concurrent messages instead; the last of them ends at the same time. On the emulated testbed's
  full-duplex shaped links, a node's outgoing queue delays the acknowledgements of what it receives, so
  sending and receiving barely overlap there either: tests/integration/test_testbed.py, README.)
  This is the network of the emulated testbed on the uniform site (:mod:`fplstudy.testbed.emulation`), the
  model the testbed's measurements validated (docs/DESIGN.md, *Cost model*), hence the default;
- ``inbox``: every directed pair has its own link, as in ``links``, and a message starts only once its
  receiver has *posted* its receive: after the receiver's earlier computes and receives of the round, in
  emission order. This is how the ``distributed`` backend runs (each process follows the round program,
  posts one receive at a time, and gloo moves a message only once its receive is posted): an aggregator
  takes its clients' updates one after the other, a stage takes a micro-batch's activations only after it
  has computed the previous one. It is the network of the emulated testbed on a topology, whose hosts
  have a link per neighbour.

A task with zero duration occupies nothing.

Dependencies, derived from the events (emission order) and the plan:

- data flow inside one micro-batch ``(step, micro)``: a compute on node X waits for everything handed
  to X in that micro-batch since X last computed (activations, gradients, labels) and for X's previous
  chunk; a transfer ``src → dst`` waits for what ``src`` last computed in that micro-batch. So a
  branch's stages run in sequence, the loss waits for its labels, and a ``concat`` trunk waits for
  every branch's activations;
- parameters: every compute of a step on X waits for X's computes of its previous step (the optimizer
  step in between), so the trunk serves the branches' batches one after another while the branches'
  own stages run in parallel; ``params_up`` from X waits for X's computes so far; ``params_down`` of
  stage position s waits for every ``params_up`` of position s in the same sync ("sync waits for the
  slowest branch"); X's next compute waits for its ``params_down`` (split learning's turns);
- pipeline (``config.pipeline``), inside one batch of M micro-batches:
  ``sequential`` — micro-batch m+1 starts when micro-batch m has ended everywhere;
  ``gpipe`` — on every node, all forwards of the batch before any backward (Huang et al. 2019);
  ``1f1b`` — on a node at depth w from the end of the chain (w = number of nodes from it to the loss
  node, itself included), the forward of micro-batch m+w waits for the backward of micro-batch m, and
  a ready backward goes before a ready forward (PipeDream-Flush, Narayanan et al. 2021).

Scheduling is non-delay list scheduling: whenever a resource is free and has ready tasks, it starts
the one with the highest priority (earlier step first; in ``1f1b`` backward before forward; then
emission order). For S uniform stages with forward time t_f and backward time t_b this gives
(M + S − 1)(t_f + t_b) for GPipe and 1F1B and M·S·(t_f + t_b) for sequential (tests/unit/costs/test_costs.py).

Fast path: :func:`schedule_fixed_order` computes the same schedule in one pass over compact tasks,
serving every resource in emission order, and checks afterwards that the list scheduler would have
chosen that order (else the caller uses :func:`schedule_round`); tests/unit/costs/test_fast_pricing.py compares them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from fplstudy.plans.events import Compute, Event, Transfer

PIPELINES = ("sequential", "gpipe", "1f1b")
_LAST = (float("inf"),)  # sorts after every task priority (step, rank, index)


@dataclass(frozen=True)
class RoundSchedule:
    """When each event of one round ran (seconds from the round's start).

    Attributes:
        start: start time of each event, in the order given.
        finish: finish time of each event.
        makespan_s: when the round's last event finished (0 for an empty round).
    """

    start: list[float]
    finish: list[float]
    makespan_s: float


def chain_depths(plan) -> dict[str, int]:
    """Pipeline depth of every node that computes: nodes from it to the loss node, itself included.

    Taken over each branch's chain (its stages, its adapter, the trunk), consecutive chunks on one node
    counting once; the largest depth where a node serves several chains.
    """
    depth: dict[str, int] = {}
    for b in plan.branches:
        nodes = [s.node for s in b.stages]
        if b.adapter_node:
            nodes.append(b.adapter_node)
        nodes += [s.node for s in plan.trunk]
        chain = [n for i, n in enumerate(nodes) if i == 0 or nodes[i - 1] != n]
        for i, n in enumerate(chain):
            depth[n] = max(depth.get(n, 0), len(chain) - i)
    return depth


def _stage_positions(plan) -> dict[str, int]:
    return {s.node: i for b in plan.branches for i, s in enumerate(b.stages)}


def build_dag(plan, events: list[Event], pipeline: str | None = None) -> tuple[list[list[int]], int]:
    """Dependencies of one round's events (see module docstring).

    Args:
        plan: the plan the events belong to.
        events: one round's events in emission order.
        pipeline: ``sequential``/``gpipe``/``1f1b``; None = ``plan.config.pipeline``.

    Returns:
        ``(deps, n_tasks)``: ``deps[i]`` lists the tasks task i waits for. Tasks ``0..len(events)-1``
        are the events; tasks from ``len(events)`` on are zero-time barriers.
    """
    pipeline = pipeline or plan.config.pipeline
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline {pipeline!r}; use one of {', '.join(PIPELINES)}")
    deps: list[list[int]] = [[] for _ in events]

    def barrier(over) -> int:
        deps.append(list(over))
        return len(deps) - 1

    positions = _stage_positions(plan)
    group_pending: dict[tuple[int, int], dict[str, set[int]]] = {}
    group_events: dict[tuple[int, int], list[int]] = {}
    last_group_of_step: dict[int, tuple[int, int]] = {}
    node_step: dict[str, int] = {}
    node_step_computes: dict[str, list[int]] = {}
    node_barrier: dict[str, int] = {}
    node_params_in: dict[str, list[int]] = {}
    sync_ups: dict[int, list[int]] = {}
    in_sync = False
    # per (step, node): forward/backward computes in order, and their micro-batches
    per_step_node: dict[tuple[int, str], list[int]] = {}

    for i, ev in enumerate(events):
        if ev.micro == -1:  # parameters: sync or relay
            if not isinstance(ev, Transfer):
                raise ValueError(f"event {i}: only transfers may have micro=-1, got {ev}")
            if not in_sync:
                sync_ups, in_sync = {}, True
            if ev.kind == "params_up":
                deps[i] = list(node_step_computes.get(ev.src, ())) + (
                    [node_barrier[ev.src]] if ev.src in node_barrier else []) + node_params_in.get(ev.src, [])
                sync_ups.setdefault(positions.get(ev.src, -1), []).append(i)
            else:
                pos = positions.get(ev.dst, -1)
                ups = sync_ups.get(pos) or [u for v in sync_ups.values() for u in v]
                deps[i] = list(ups) if ups else list(node_step_computes.get(ev.src, ()))
                node_params_in.setdefault(ev.dst, []).append(i)
            continue
        in_sync = False
        key = (ev.step, ev.micro)
        if key not in group_pending:
            group_pending[key], group_events[key] = {}, []
            prev = last_group_of_step.get(ev.step)
            if pipeline == "sequential" and prev is not None:
                group_pending[key]["__prev__"] = {barrier(group_events[prev])}
            last_group_of_step[ev.step] = key
        pending = group_pending[key]
        prev_micro = pending.get("__prev__", set())
        if isinstance(ev, Compute):
            x = ev.node
            if node_step.get(x) != ev.step:
                if node_step_computes.get(x):
                    node_barrier[x] = barrier(node_step_computes[x])
                node_step[x], node_step_computes[x] = ev.step, []
            d = set(pending.get(x, ())) | prev_micro
            if x in node_barrier:
                d.add(node_barrier[x])
            d.update(node_params_in.pop(x, ()))
            deps[i] = sorted(d)
            pending[x] = {i}
            node_step_computes[x].append(i)
            per_step_node.setdefault((ev.step, x), []).append(i)
        else:
            deps[i] = sorted(set(pending.get(ev.src, ())) | prev_micro)
            pending.setdefault(ev.dst, set()).add(i)
        group_events[key].append(i)

    if pipeline in ("gpipe", "1f1b"):
        depth = chain_depths(plan)
        for (_step, node), ids in per_step_node.items():
            fwd = [i for i in ids if events[i].phase == "forward"]
            bwd = [i for i in ids if events[i].phase == "backward"]
            if not fwd or not bwd:
                continue
            if pipeline == "gpipe":
                all_fwd = barrier(fwd)
                for i in bwd:
                    deps[i].append(all_fwd)
            else:
                first_fwd: dict[int, int] = {}
                last_bwd: dict[int, int] = {}
                for i in fwd:
                    first_fwd.setdefault(events[i].micro, i)
                for i in bwd:
                    last_bwd[events[i].micro] = i
                w = depth.get(node, 1)
                for m, i in first_fwd.items():
                    if m - w in last_bwd:
                        deps[i].append(last_bwd[m - w])
    return deps, len(deps)


def schedule_round(plan, events: list[Event], durations: list[float], pipeline: str | None = None,
                   wait_s: float = 0.0) -> RoundSchedule:
    """List-schedule one round's events (see module docstring).

    Args:
        plan: the plan.
        events: one round's events in emission order.
        durations: seconds each event takes (same order).
        pipeline: ``sequential``/``gpipe``/``1f1b``; None = ``plan.config.pipeline``.
        wait_s: a round deadline the aggregator waits for (:attr:`fplstudy.plans.dynamics.Turnout.wait_s`): no
            ``params_down`` of a sync (one that follows its ``params_up``) starts before it, and the round
            lasts at least that long.

    Returns:
        The :class:`RoundSchedule`.
    """
    pipeline = pipeline or plan.config.pipeline
    deps, n = build_dag(plan, events, pipeline)
    network = plan.config.network
    if network == "inbox":  # a message waits for its receiver's earlier computes and receives (module docstring)
        last: dict[str, int] = {}
        for i, ev in enumerate(events):
            if isinstance(ev, Compute):
                last[ev.node] = i
            else:
                if ev.dst in last:
                    deps[i].append(last[ev.dst])
                last[ev.dst] = i
    n_ev = len(events)
    dur = list(durations) + [0.0] * (n - n_ev)
    succ: list[list[int]] = [[] for _ in range(n)]
    indeg = [0] * n
    for i, ds in enumerate(deps):
        for d in set(ds):
            succ[d].append(i)
            indeg[i] += 1
    star = network == "star"
    resource: list[tuple | None] = []
    other: list[tuple | None] = []  # the second resource a star message holds: its receiver's interface
    prio: list[tuple] = []
    for i, ev in enumerate(events):
        if isinstance(ev, Compute):
            resource.append(("node", ev.node))
            other.append(None)
            rank = (0 if ev.phase == "backward" else 1) if pipeline == "1f1b" else 0
            prio.append((ev.step, rank, i))
        else:
            resource.append(("interface", ev.src) if star else ("link", ev.src, ev.dst))
            other.append(("interface", ev.dst) if star else None)
            prio.append((ev.step, 0, i))
    resource += [None] * (n - n_ev)
    other += [None] * (n - n_ev)
    prio += [(0, 0, i) for i in range(n_ev, n)]

    start = [0.0] * n
    finish = [0.0] * n
    ready_at = [0.0] * n
    if wait_s:  # the sync's params_down (after its params_up; a catch-up's come without any) wait for it
        ups = False
        for i, ev in enumerate(events):
            ups = ev.micro == -1 and (ups or ev.kind == "params_up")
            if ups and ev.kind == "params_down":
                ready_at[i] = wait_s
    queues: dict[tuple, list] = {}
    busy_until: dict[tuple, float] = {}
    dirty: set[tuple] = set()
    clock: list[tuple[float, int]] = []  # (finish time, task)

    def complete(i: int, t: float) -> None:
        stack = [(i, t)]
        while stack:
            j, tj = stack.pop()
            finish[j] = tj
            for k in succ[j]:
                ready_at[k] = max(ready_at[k], tj)
                indeg[k] -= 1
                if indeg[k] == 0:
                    release(k, stack)

    def release(k: int, stack) -> None:
        if resource[k] is None or dur[k] == 0.0:
            start[k] = ready_at[k]
            stack.append((k, ready_at[k]))
        else:
            heapq.heappush(queues.setdefault(resource[k], []), (prio[k], k))
            dirty.add(resource[k])

    boot: list[tuple[int, float]] = []
    for i in range(n):
        if indeg[i] == 0:
            release(i, boot)
    for j, tj in boot:
        complete(j, tj)
    def take(q: list) -> int | None:
        """The queue's task of highest priority whose second resource (if any) is free now."""
        held, got = [], None
        while q:
            item = heapq.heappop(q)
            second = other[item[1]]
            if second is None or busy_until.get(second, 0.0) <= now:
                got = item[1]
                break
            held.append(item)
        for item in held:
            heapq.heappush(q, item)
        return got

    now = 0.0
    while True:
        # resources in the order of their most urgent task: a star message holds two interfaces, so which
        # queue is served first decides who waits (a set's order would follow Python's string hashing)
        for res in sorted(dirty, key=lambda r: queues[r][0][0] if queues.get(r) else _LAST):
            q = queues.get(res)
            k = take(q) if q and busy_until.get(res, 0.0) <= now else None
            if k is not None:
                start[k] = max(now, ready_at[k])
                busy_until[res] = start[k] + dur[k]
                if other[k] is not None:
                    busy_until[other[k]] = busy_until[res]
                heapq.heappush(clock, (busy_until[res], k))
            else:  # nothing can start on it now: a completion marks it again
                dirty.discard(res)
        if not clock:
            break
        now = clock[0][0]
        while clock and clock[0][0] == now:
            _, k = heapq.heappop(clock)
            dirty.add(resource[k])
            if other[k] is not None:  # a receiver's interface is free: messages queued at any sender may start
                dirty.update(r for r, q in queues.items() if q)
            complete(k, now)
    if any(indeg[i] > 0 for i in range(n)):  # pragma: no cover - a bug in build_dag
        raise RuntimeError("the event DAG has a cycle; cannot schedule")
    makespan = max(finish[:n_ev], default=0.0)
    return RoundSchedule(start[:n_ev], finish[:n_ev], max(makespan, wait_s) if wait_s else makespan)


# --------------------------------------------------------------------------- fast path
# Compact tasks: ``(typ, micro, a, b, res, dur, back)`` with typ TASK_COMPUTE (a = node index),
# TASK_DATA (a message of a micro-batch, a → b), TASK_UP / TASK_DOWN (params_up / params_down, a → b);
# ``res`` the resource index (-1 when ``dur`` is 0: the task occupies nothing); ``back`` whether a compute
# is a backward. A round is a list of segments ``(step, tasks)`` in emission order.
TASK_COMPUTE, TASK_DATA, TASK_UP, TASK_DOWN = 0, 1, 2, 3


@dataclass(frozen=True)
class FastSchedule:
    """Start and finish time of every task of one round (flattened over its segments), and the makespan."""

    start: np.ndarray
    finish: np.ndarray
    makespan_s: float


def fast_path_applies(plan, pipeline: str | None = None) -> bool:
    """Whether :func:`schedule_fixed_order` may price this plan: with one micro-batch per batch every
    pipeline orders a node's chunks by data flow alone; ``sequential`` also with micro-batches. Only for the
    ``links`` network."""
    pipeline = pipeline or plan.config.pipeline
    if plan.config.network != "links":  # a message on two resources: the reference only
        return False
    return pipeline == "sequential" or plan.config.micro_batches == 1


def schedule_fixed_order(plan, segments: list[tuple[int, list[tuple]]], n_res: int, pipeline: str | None = None,
                         wait_s: float = 0.0) -> FastSchedule | None:
    """The list schedule of one round (:func:`schedule_round`), computed in one pass in emission order.

    Every resource is assumed to serve its tasks in emission order, which is the list scheduler's priority
    order (earlier step, then emission; ``1f1b`` ranks a step's backward first, checked below), and the
    dependencies of :func:`build_dag` are carried as finish times instead of task sets. The result is the
    list schedule exactly (same float operations: ``start = max(ready, resource free)``, ``finish = start +
    duration``) when no resource, at a start it had to wait for (idle), had a later task ready before it,
    nor a later task of higher priority ready by then — which is checked afterwards. Only for plans where
    :func:`fast_path_applies`. ``wait_s``: as :func:`schedule_round`'s.

    Returns:
        The :class:`FastSchedule`, or None when the check fails (use :func:`schedule_round`).
    """
    pipeline = pipeline or plan.config.pipeline
    sequential = pipeline == "sequential"
    node_names = [n.name for n in plan.nodes]
    pos_by_name = _stage_positions(plan)
    positions = [pos_by_name.get(name, -1) for name in node_names]
    n = len(node_names)
    free = [0.0] * n_res
    barrier: list = [None] * n  # finish of the node's computes in its previous step (max)
    current: list = [None] * n  # ... in its current step
    node_step = [None] * n
    params_in: list = [None] * n
    ups: dict[int, float] = {}
    ups_all = None
    in_sync = False
    times: list[tuple[float, float]] = []  # (start, finish) of every task
    served: list[tuple] = []  # per task on a resource: (resource, ready, start, waited idle, step, backward)
    g_step = g_micro = None
    pending: dict[int, float] = {}
    prev = g_max = 0.0
    for step, tasks in segments:
        for typ, micro, a, b, res, dur, back in tasks:
            if typ >= TASK_UP:
                if not in_sync:
                    ups, ups_all, in_sync = {}, None, True
                if typ == TASK_UP:
                    r = 0.0
                    for t in (current[a], barrier[a], params_in[a]):
                        if t is not None and t > r:
                            r = t
                else:
                    u = ups.get(positions[b], ups_all)
                    if u is not None:
                        r = u
                    else:
                        r = current[a] if current[a] is not None else 0.0
                    if wait_s > r and ups_all is not None:  # a sync's (a catch-up has no params_up)
                        r = wait_s
            else:
                in_sync = False
                if micro != g_micro or step != g_step:
                    if sequential and step == g_step:
                        prev = g_max
                    else:
                        prev = 0.0
                    g_step, g_micro, pending, g_max = step, micro, {}, 0.0
                if typ == TASK_COMPUTE:
                    if node_step[a] != step:
                        if current[a] is not None:
                            barrier[a] = current[a]
                        node_step[a], current[a] = step, None
                    r = pending.get(a, 0.0)
                    if prev > r:
                        r = prev
                    t = barrier[a]
                    if t is not None and t > r:
                        r = t
                    t = params_in[a]
                    if t is not None:
                        if t > r:
                            r = t
                        params_in[a] = None
                else:
                    r = pending.get(a, 0.0)
                    if prev > r:
                        r = prev
            if res >= 0:
                f0 = free[res]
                s = r if r > f0 else f0
                f = s + dur
                free[res] = f
                served.append((res, r, s, r > f0, step, back))
            else:
                s = f = r
            times.append((s, f))
            if typ == TASK_COMPUTE:
                pending[a] = f
                c = current[a]
                current[a] = f if c is None or f > c else c
            elif typ == TASK_DATA:
                p = pending.get(b)
                pending[b] = f if p is None or f > p else p
            elif typ == TASK_UP:
                pos = positions[a]
                u = ups.get(pos)
                ups[pos] = f if u is None or f > u else u
                ups_all = f if ups_all is None or f > ups_all else ups_all
            else:
                p = params_in[b]
                params_in[b] = f if p is None or f > p else p
            if typ < TASK_UP and f > g_max:
                g_max = f
    if not _fixed_order_holds(served, pipeline == "1f1b"):
        return None
    times_a = np.array(times, dtype=float).reshape(-1, 2)
    makespan = float(times_a[:, 1].max()) if len(times) else 0.0
    return FastSchedule(times_a[:, 0], times_a[:, 1], max(makespan, wait_s) if wait_s else makespan)


def _fixed_order_holds(served: list[tuple], backward_first: bool) -> bool:
    """Whether serving every resource in emission order is what the list scheduler does.

    At each start the list scheduler takes, among the resource's tasks released by then, the one of
    highest priority. Emission order is priority order except, in ``1f1b``, a backward emitted after a
    forward of the same step on the same node. So the order holds unless: a task that had to wait for its
    release (the resource idle, ``gap``) has a later task released strictly before it started; or a
    backward of the same step is released by the time an earlier forward started (``1f1b``).
    """
    if not served:
        return True
    res, ready, start, gap, steps, backs = zip(*served)
    r = np.array(res)
    order = np.argsort(r, kind="stable")
    rs, rd, st, gp = r[order], np.array(ready)[order], np.array(start)[order], np.array(gap)[order]
    bounds = np.flatnonzero(np.diff(rs)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(rs)]):
        if hi - lo < 2:
            continue
        later = np.minimum.accumulate(rd[lo + 1:hi][::-1])[::-1]  # min ready over the tasks after each
        if (gp[lo:hi - 1] & (later < st[lo:hi - 1])).any():
            return False
    if backward_first:
        started: dict[tuple, float] = {}  # (resource, step) -> latest start of a forward so far
        for q, rq, sq, step, back in zip(res, ready, start, steps, backs):
            k = (q, step)
            if not back:
                if sq > started.get(k, -1.0):
                    started[k] = sq
            elif k in started and rq <= started[k]:
                return False
    return True
