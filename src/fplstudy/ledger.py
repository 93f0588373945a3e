"""The cost ledger: the event stream of a run, priced per round, node and kind of work.

:func:`price` turns the events of a run (real, from :func:`fplstudy.engine.train`, or analytic, from
:func:`fplstudy.dryrun.dry_run`) into a tidy table; :func:`totals` sums it into the cost figures of
``metrics.json``; :func:`write_ledger_csv` writes it atomically.

Schema of the ledger (one row per round × node × kind; rows sorted by round, plan node order, kind):

==================  =======  ========================================================================
column              type     meaning
==================  =======  ========================================================================
round               int      communication round, 0-based
node                str      node name (``n0``, ``n1``, …)
role                str      the node's role in the plan (``branch0/stage0``, ``trunk/stage1``, …)
device              str      the node's device profile
kind                str      ``forward``, ``backward`` (compute); ``activations``, ``gradients``,
                             ``labels``, ``params_up``, ``params_down`` (messages the node sent or
                             received); ``idle`` (waiting). Only kinds that occurred, plus ``idle``
                             for every node in every round
count               int      compute calls, or messages sent + received, of that kind
flops               int      FLOPs computed (FlopCounterMode's count, FLOP = 2 MAC); 0 for messages
bytes_tx            int      payload bytes sent (numel × element size, no framing)
bytes_rx            int      payload bytes received
seconds             float    compute: FLOPs / device FLOP/s; message: bits / link rate + latency,
                             counted at the sender *and* at the receiver (both radios are busy);
                             idle: round makespan − the time the node computed or communicated
                             (union of its intervals in the schedule, :mod:`fplstudy.makespan`)
energy_j            float    compute: active W × seconds; message: bits × tx J/bit at the sender,
                             bits × rx J/bit at the receiver; idle: idle W × seconds
round_makespan_s    float    wall-clock length of the round (same on every row of the round)
==================  =======  ========================================================================

Sums that hold: Σ bytes_tx = Σ bytes_rx = bytes of all messages; Σ flops = the run's training FLOPs;
per node and round, seconds of compute + idle ≤ round makespan (messages may overlap compute).

Link direction: a message uses the link profile's ``down_bps`` when it goes from the server side (a
trunk stage or the aggregator) to an edge node (a branch stage holder), ``up_bps`` otherwise.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch

from fplstudy.events import Compute, Event
from fplstudy.flops import BlockProfile, profile_block, profile_blocks
from fplstudy.makespan import schedule_round
from fplstudy.models import make_adapter
from fplstudy.profiles import Profiles, check_profiles

KINDS = ("forward", "backward", "activations", "gradients", "labels", "params_up", "params_down", "idle")
COLUMNS = ("round", "node", "role", "device", "kind", "count", "flops", "bytes_tx", "bytes_rx", "seconds",
           "energy_j", "round_makespan_s")


@lru_cache(maxsize=64)
def adapter_profile(shape: tuple[int, ...]) -> BlockProfile:
    """Per-sample profile of the junction adapter for activations of per-sample ``shape``."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        adapter = make_adapter(shape)
    return profile_block("adapter", adapter, shape)


def chunk_profiles(plan, blocks: tuple[str, ...], in_shape: tuple[int, ...]) -> tuple[BlockProfile, ...]:
    """Per-sample profiles of a run of blocks fed inputs of per-sample ``in_shape``.

    The plan's own profile where the shape matches; the adapter's; or a measurement on the other
    shape (the row views of a ``concat`` junction).
    """
    in_shape = tuple(in_shape)
    if tuple(blocks) == ("adapter",):
        return (adapter_profile(in_shape),)
    start = plan.block_names.index(blocks[0])
    stop = start + len(blocks)
    if plan.block_names[start:stop] != tuple(blocks):
        raise ValueError(f"blocks {blocks} are not a contiguous run of {plan.model}'s blocks {plan.block_names}")
    if plan.profile[start].in_shape == in_shape:
        return plan.profile[start:stop]
    return profile_blocks(plan.model, tuple(plan.input_shape), plan.num_classes, start, stop, in_shape)


def chunk_flops(plan, blocks: tuple[str, ...], in_shape: tuple[int, ...], phase: str, input_grad: bool) -> int:
    """FLOPs per sample of one forward or backward of a run of blocks.

    Backward: a block computes its input's gradient when that input requires grad — the chunk's input
    when ``input_grad``, and any block's input once an earlier block of the chunk has parameters.
    """
    profs = chunk_profiles(plan, blocks, in_shape)
    if phase == "forward":
        return sum(p.flops_fwd for p in profs)
    total, requires = 0, input_grad
    for p in profs:
        total += p.flops_bwd if requires else p.flops_bwd_no_input_grad
        requires = requires or p.params > 0
    return total


def _server_side(plan) -> set[str]:
    return {n.name for n in plan.nodes if n.role.startswith(("trunk", "aggregator"))}


def event_costs(plan, events: list[Event], profiles: Profiles) -> tuple[list[int], list[float]]:
    """FLOPs and seconds of every event (messages: seconds of the transfer).

    Returns:
        ``(flops, seconds)``, one entry per event.
    """
    link = profiles.link(plan.config.link)
    server = _server_side(plan)
    devices = {n.name: profiles.device(n.device) for n in plan.nodes}
    cache: dict[tuple, int] = {}
    flops, seconds = [], []
    for ev in events:
        if isinstance(ev, Compute):
            key = (ev.blocks, ev.in_shape, ev.phase, ev.input_grad)
            if key not in cache:
                cache[key] = chunk_flops(plan, ev.blocks, ev.in_shape, ev.phase, ev.input_grad)
            f = cache[key] * ev.samples
            flops.append(f)
            seconds.append(f / devices[ev.node].flops_per_s)
        else:
            rate = link.down_bps if ev.src in server and ev.dst not in server else link.up_bps
            flops.append(0)
            seconds.append(ev.nbytes * 8 / rate + link.latency_s)
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
          ) -> pd.DataFrame:
    """Price an event stream into the ledger (schema in the module docstring).

    Args:
        plan: the plan that produced the events.
        events: the run's events, in emission order.
        profiles: device and link profiles; None = ``check_profiles(plan)`` (shipped + ``profiles_file``).
        pipeline: ``sequential``/``gpipe``/``1f1b``; None = ``plan.config.pipeline``.

    Returns:
        The ledger as a DataFrame with columns :data:`COLUMNS`.
    """
    profiles = profiles or check_profiles(plan)
    link = profiles.link(plan.config.link)
    devices = {n.name: profiles.device(n.device) for n in plan.nodes}
    flops, seconds = event_costs(plan, events, profiles)
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
        signature = tuple(tuple(ev.__dict__.values())[1:] for ev in evs)  # every field but the round
        if signature not in schedules:
            schedules[signature] = schedule_round(plan, evs, [seconds[i] for i in ids], pipeline)
        sched = schedules[signature]
        makespans[rnd] = sched.makespan_s
        busy: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for j, i in enumerate(ids):
            ev, s = events[i], seconds[i]
            span = (sched.start[j], sched.finish[j])
            if isinstance(ev, Compute):
                add((rnd, ev.node, ev.phase), 1, flops[i], 0, 0, s, devices[ev.node].active_w * s)
                busy[ev.node].append(span)
            else:
                bits = ev.nbytes * 8
                add((rnd, ev.src, ev.kind), 1, 0, ev.nbytes, 0, s, bits * link.tx_j_per_bit)
                add((rnd, ev.dst, ev.kind), 1, 0, 0, ev.nbytes, s, bits * link.rx_j_per_bit)
                busy[ev.src].append(span)
                busy[ev.dst].append(span)
        for n in plan.nodes:
            idle = max(0.0, sched.makespan_s - _union_length(busy.get(n.name, [])))
            add((rnd, n.name, "idle"), 0, 0, 0, 0, idle, devices[n.name].idle_w * idle)

    order = {n.name: i for i, n in enumerate(plan.nodes)}
    kind_order = {k: i for i, k in enumerate(KINDS)}
    rows = []
    for (rnd, node, kind) in sorted(acc, key=lambda k: (k[0], order[k[1]], kind_order[k[2]])):
        count, f, tx, rx, s, e = acc[(rnd, node, kind)]
        n = plan.node(node)
        rows.append((rnd, node, n.role, n.device, kind, count, f, tx, rx, s, e, makespans[rnd]))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype({"round": "int64", "count": "int64", "flops": "int64", "bytes_tx": "int64",
                      "bytes_rx": "int64", "seconds": "float64", "energy_j": "float64",
                      "round_makespan_s": "float64"})


def totals(plan, ledger: pd.DataFrame) -> dict:
    """The cost totals of a run, for ``metrics.json``.

    Args:
        plan: the plan.
        ledger: its priced ledger (:func:`price`, or read back from ``ledger.csv``).

    Returns:
        ``flops_total``, ``bytes_total`` (every message once), ``energy_j`` (all nodes),
        ``energy_j_max_node`` (the node that spent most), ``makespan_s`` (sum over rounds),
        ``memory_bytes_max_node`` (peak, :func:`fplstudy.memory.peak_memory`), ``model_params``,
        ``model_params_ratio`` and ``params_stored_total`` (:func:`fplstudy.memory.model_size`).
    """
    from fplstudy.memory import model_size, peak_memory

    per_node = ledger.groupby("node")["energy_j"].sum()
    size = model_size(plan)
    memory = peak_memory(plan)
    return {
        "flops_total": int(ledger["flops"].sum()),
        "bytes_total": int(ledger["bytes_tx"].sum()),
        "energy_j": float(ledger["energy_j"].sum()),
        "energy_j_max_node": float(per_node.max()) if len(per_node) else 0.0,
        "makespan_s": float(ledger.groupby("round")["round_makespan_s"].first().sum()),
        "memory_bytes_max_node": int(memory["total_bytes"].max()),
        "model_params": size["model_params"],
        "model_params_ratio": size["model_params_ratio"],
        "params_stored_total": size["params_stored_total"],
    }


def write_ledger_csv(ledger: pd.DataFrame, path: str | Path) -> Path:
    """Write the ledger to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
