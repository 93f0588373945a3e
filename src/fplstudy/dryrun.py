"""Dry run: the event stream, ledger and cost totals of a plan, without training.

Costs do not depend on the weights: what every node computes and sends is fixed by the plan, the
model's block profiles and the shard sizes. :func:`plan_events` replays the engine's schedule
(:func:`fplstudy.engine.round_batches`, :func:`~fplstudy.engine.branch_chain`, sync and relay, in the
same order, with the same fields) without a tensor, so a dry run's ledger equals, row for row, the
ledger of a real run of the same plan (tests/test_costs.py checks it for every strategy). Only the
dataset's labels are read (the partition of the shards depends on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fplstudy.config import Config
from fplstudy.events import Compute, Event, Transfer
from fplstudy.ledger import chunk_profiles, price, totals
from fplstudy.memory import peak_memory
from fplstudy.plan import Plan, resolve
from fplstudy.profiles import Profiles, check_profiles

F32, I64 = 4, 8  # bytes per element


@dataclass
class DryRun:
    """What a dry run produced.

    Attributes:
        plan: the resolved plan.
        shard_sizes: training samples per branch.
        events: the analytic event stream (same as a real run's).
        ledger: the priced ledger (:func:`fplstudy.ledger.price`).
        totals: the cost totals (:func:`fplstudy.ledger.totals`).
        memory: peak memory per node (:func:`fplstudy.memory.peak_memory`).
    """

    plan: Plan
    shard_sizes: list[int]
    events: list[Event]
    ledger: pd.DataFrame
    totals: dict
    memory: pd.DataFrame


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class _Emitter:
    """Appends events exactly as the engine's transport records them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def move(self, src, dst, kind, shape, where, elem=F32, dtype="float32"):
        shape = tuple(int(s) for s in shape)
        self.events.append(Transfer(*where, src, dst, kind, shape, dtype, _numel(shape) * elem))

    def compute(self, where, node, blocks, in_shape, k, phase, input_grad):
        self.events.append(Compute(*where, node, tuple(blocks), tuple(in_shape), k, phase, input_grad))

    def forward(self, chain, shapes, where, k):
        for i, ch in enumerate(chain):
            if i > 0 and ch.node != chain[i - 1].node:
                self.move(chain[i - 1].node, ch.node, "activations", (k, *shapes[i]), where)
            self.compute(where, ch.node, ch.blocks, shapes[i], k, "forward", False)

    def backward(self, chain, shapes, where, k, reads_data=True):
        for i in range(len(chain) - 1, -1, -1):
            ch = chain[i]
            self.compute(where, ch.node, ch.blocks, shapes[i], k, "backward", i > 0 or not reads_data)
            if i > 0 and chain[i - 1].node != ch.node:
                self.move(ch.node, chain[i - 1].node, "gradients", (k, *shapes[i]), where)

    def labels(self, data_node, loss_node, where, k):
        if loss_node != data_node:
            self.move(data_node, loss_node, "labels", (k,), where, I64, "int64")


def _stage_numel(plan: Plan, stage) -> int:
    return sum(p.sync_numel for p in plan.profile[stage.start:stage.stop])


def plan_events(plan: Plan, shard_sizes: list[int]) -> list[Event]:
    """The events a real run of ``plan`` emits, computed from the plan alone (no tensors).

    Args:
        plan: the plan.
        shard_sizes: training samples per branch (``engine.load_partitioned(plan)[1].samples()``).

    Returns:
        The event stream of all ``plan.config.rounds`` rounds, in the engine's order.
    """
    from fplstudy.engine import branch_chain, branch_in_shape, chain_in_shapes, round_batches, sync_due, trunk_chain

    cfg = plan.config
    em = _Emitter()
    D = len(plan.branches)
    agg = plan.aggregator
    batches = round_batches(plan, shard_sizes)  # the same every round
    chains = [branch_chain(plan, d) for d in range(D)]
    shapes = [chain_in_shapes(plan, chains[d], branch_in_shape(plan, d)) for d in range(D)]
    trunk = trunk_chain(plan)
    if plan.schedule == "lockstep":
        tshapes = chain_in_shapes(plan, trunk, plan.junction_shape())
        outs = [chunk_profiles(plan, chains[d][-1].blocks, shapes[d][-1])[-1].out_shape for d in range(D)]
    for rnd in range(cfg.rounds):
        turn = None
        for batch in batches:
            if plan.schedule == "turns" and batch.branch != turn:
                if D > 1 and not (rnd == 0 and turn is None):
                    src_b, dst_b = (batch.branch - 1) % D, batch.branch
                    for a, b in zip(plan.branches[src_b].stages, plan.branches[dst_b].stages):
                        where = (rnd, batch.step, dst_b, -1)
                        numel = _stage_numel(plan, a)
                        if a.node != agg:
                            em.move(a.node, agg, "params_up", (numel,), where)
                        if b.node != agg:
                            em.move(agg, b.node, "params_down", (numel,), where)
                turn = batch.branch
            for micro, k in enumerate(batch.micro_sizes):
                where = (rnd, batch.step, batch.branch, micro)
                if plan.schedule != "lockstep":
                    d = batch.branch
                    em.forward(chains[d], shapes[d], where, k)
                    em.labels(plan.branches[d].data_node, chains[d][-1].node, where, k)
                    em.backward(chains[d], shapes[d], where, k)
                    continue
                join = trunk[0].node
                for d in range(D):
                    em.forward(chains[d], shapes[d], where, k)
                    if chains[d][-1].node != join:
                        em.move(chains[d][-1].node, join, "activations", (k, *outs[d]), where)
                em.forward(trunk, tshapes, where, k)
                em.labels(plan.branches[0].data_node, trunk[-1].node, where, k)
                em.backward(trunk, tshapes, where, k, reads_data=False)
                for d in range(D):
                    if chains[d][-1].node != join:
                        em.move(join, chains[d][-1].node, "gradients", (k, *outs[d]), where)
                    em.backward(chains[d], shapes[d], where, k)
        if sync_due(plan, rnd):
            step = len(batches)
            for s in range(len(plan.branches[0].stages)):
                numel = _stage_numel(plan, plan.branches[0].stages[s])
                for kind in ("params_up", "params_down"):
                    for d, b in enumerate(plan.branches):
                        node = b.stages[s].node
                        if node != agg:
                            src, dst = (node, agg) if kind == "params_up" else (agg, node)
                            em.move(src, dst, kind, (numel,), (rnd, step, d, -1))
    return em.events


def shard_sizes(plan: Plan) -> list[int]:
    """Training samples per branch, as the engine partitions them (reads the dataset's labels)."""
    from fplstudy.engine import load_partitioned

    return [int(n) for n in load_partitioned(plan)[1].samples()]


def dry_run(cfg_or_plan: Config | Plan, *, shards: list[int] | None = None,
            profiles: Profiles | None = None) -> DryRun:
    """Events, ledger and totals of a plan without training.

    Args:
        cfg_or_plan: a validated config or a resolved plan.
        shards: training samples per branch; None = partition the dataset as the engine does.
        profiles: device/link profiles; None = ``check_profiles(plan)``.

    Returns:
        A :class:`DryRun`.

    Raises:
        ConfigError: for a bad plan or unknown/broken profiles (before any pricing).
    """
    plan = cfg_or_plan if isinstance(cfg_or_plan, Plan) else resolve(cfg_or_plan)
    profiles = profiles or check_profiles(plan)
    sizes = list(shards) if shards is not None else shard_sizes(plan)
    events = plan_events(plan, sizes)
    ledger = price(plan, events, profiles)
    return DryRun(plan, sizes, events, ledger, totals(plan, ledger), peak_memory(plan))
