"""The round program: what every round of a plan does, as data, computed from the plan alone.

A round is a list of items (:func:`round_program`): a :class:`Relay` (split learning hands the head
to the next client), a :class:`BatchStep` (one batch of one branch, or of every branch in lockstep for
``concat``), and a :class:`Sync` (FedAvg of the replicated stages). A batch step holds the program of
one micro-batch (:func:`micro_program`), a list of operations: :class:`Run` (a chunk's forward or
backward on its node), :class:`Handoff` (a hand-off between nodes: activations, gradients, labels or
parameters), :class:`Loss`, and for ``concat`` :class:`Join` and :class:`Split`.

Two walkers read the same program: the training engine (:mod:`fplstudy.train.engine`) executes it with
tensors, and the dry run (:mod:`fplstudy.costs.dryrun`) turns it into events without one. Both build every
event with :func:`run_event` and :func:`hop_event` (the engine's in-memory transport records the bytes of
the tensor it actually copied, and refuses one whose shape or dtype differs from the hop's). Memory
(:mod:`fplstudy.costs.memory`) and the makespan read the chains and shapes defined here too: nothing that
depends only on the plan climbs up into the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from fplstudy.facts.flops import BlockProfile, profile_block, profile_blocks
from fplstudy.facts.models import MODELS, make_adapter
from fplstudy.plans.events import Compute, Transfer

TRUNK = -1  # the chain index of the trunk where it runs on its own (``concat``: after the join)
BATCH_KINDS = ("activations", "gradients", "labels")  # hops whose shape is per sample (times the batch)
ELEMENT_BYTES = {"float32": 4, "int64": 8}


# --------------------------------------------------------------------------- batches and chains

@dataclass(frozen=True)
class Batch:
    """One step of a round: a batch of ``size`` samples of ``branch`` (-1: every branch, lockstep), the
    samples ``start .. start + size`` of the branch's order for the round (its local epochs one after the
    other, each a permutation of its shard)."""

    step: int
    branch: int
    size: int
    micro_sizes: tuple[int, ...]
    start: int = 0


@dataclass(frozen=True)
class Chunk:
    """A module call on one node inside a branch's chain: a stage, or the junction adapter."""

    node: str
    blocks: tuple[str, ...]
    start: int
    stop: int
    kind: str  # 'stage' | 'adapter'


def _micro_sizes(size: int, parts: int) -> tuple[int, ...]:
    return tuple(int(len(a)) for a in np.array_split(np.arange(size), parts) if len(a))


def epoch_sizes(n: int, batch_size: int, last_batch: str = "spread") -> list[int]:
    """The batch sizes of one epoch over ``n`` samples (the config key ``last_batch``).

    ``spread``: ``k = ceil(n / batch_size)`` batches, the first ``n mod k`` of ``ceil(n / k)`` samples and the
    others of ``floor(n / k)``, so no batch is a small tail (205 samples at 32: 30, 30, 29, 29, 29, 29, 29);
    ``drop``: ``floor(n / batch_size)`` full batches, the rest left out (at least one batch: all ``n`` when
    ``n < batch_size``); ``keep``: full batches, then one of ``n mod batch_size``.
    """
    if n <= batch_size:
        return [n] if n else []
    if last_batch == "spread":
        k = -(-n // batch_size)
        return [n // k + 1] * (n % k) + [n // k] * (k - n % k)
    full = [batch_size] * (n // batch_size)
    return full + ([n % batch_size] if n % batch_size and last_batch == "keep" else [])


def round_batches(plan, shard_sizes: list[int]) -> list[Batch]:
    """The batches of one round in execution order (the same in every round).

    Args:
        plan: the plan.
        shard_sizes: training samples per branch (for ``concat``: every branch holds the same samples).

    Returns:
        Batches; steps are numbered 0.. in execution order.
    """
    cfg = plan.config
    per_branch = []  # per branch: (size, start) of its batches, epoch after epoch
    for n in shard_sizes:
        sizes = epoch_sizes(n, cfg.batch_size, cfg.last_batch)
        starts = [e * n + sum(sizes[:i]) for e in range(cfg.local_epochs) for i in range(len(sizes))]
        per_branch.append(list(zip(sizes * cfg.local_epochs, starts)))
    order: list[tuple[int, tuple[int, int]]] = []
    if plan.branch_order == "lockstep":
        order = [(-1, b) for b in per_branch[0]]
    elif plan.branch_order == "turns":
        order = [(d, b) for d, batches in enumerate(per_branch) for b in batches]
    else:
        for p in range(max(len(s) for s in per_branch)):
            order += [(d, batches[p]) for d, batches in enumerate(per_branch) if p < len(batches)]
    return [Batch(k, d, s, _micro_sizes(s, cfg.micro_batches), start) for k, (d, (s, start)) in enumerate(order)]


def branch_chain(plan, d: int) -> list[Chunk]:
    """The chunks a batch of branch ``d`` runs through, in forward order (for ``concat``: the
    branch's own chunks only; the trunk follows the join)."""
    b = plan.branches[d]
    chain = [Chunk(s.node, s.blocks, s.start, s.stop, "stage") for s in b.stages]
    if b.adapter_node:
        chain.append(Chunk(b.adapter_node, ("adapter",), plan.junction_at, plan.junction_at, "adapter"))
    if plan.junction != "concat":
        chain += trunk_chain(plan)
    return chain


def trunk_chain(plan) -> list[Chunk]:
    """The trunk's chunks in forward order."""
    return [Chunk(s.node, s.blocks, s.start, s.stop, "stage") for s in plan.trunk]


def sync_due(plan, rnd: int) -> bool:
    """Whether replicated parts are averaged at the end of round ``rnd`` (0-based)."""
    return plan.sync == "fedavg" and (rnd + 1) % plan.sync_every == 0


def stage_numel(plan, stage) -> int:
    """Floating-point numbers a stage's state holds (parameters and float buffers): what a sync or a
    relay ships of it."""
    return sum(p.sync_numel for p in plan.profile[stage.start:stage.stop])


# --------------------------------------------------------------------------- shapes and profiles

@lru_cache(maxsize=64)
def adapter_profile(shape: tuple[int, ...]) -> BlockProfile:
    """Per-sample profile of the junction adapter for activations of per-sample ``shape``."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        adapter = make_adapter(shape)
    return profile_block("adapter", adapter, shape)


def default_adapter_shape(model: str, profile) -> tuple[int, ...] | None:
    """Per-sample activation shape at ``model``'s default junction (``profile``: its block profiles): where an fpl
    plan's adapter sits unless ``junction_at`` moves it, and where ``fplstudy calibrate`` times the adapter, whose
    rate therefore prices it at this shape only; None for a model whose default junction is 0."""
    at = MODELS[model].default_junction
    return tuple(profile[at - 1].out_shape) if at > 0 else None


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


def chunk_out_shape(plan, ch: Chunk, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-sample output shape of a chunk (:func:`chunk_profiles`: measured for concat views)."""
    if ch.kind == "adapter":
        return tuple(in_shape)
    return chunk_profiles(plan, ch.blocks, in_shape)[-1].out_shape


def chain_in_shapes(plan, chain: list[Chunk], first_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Per-sample input shape of every chunk of ``chain`` given the first chunk's input shape."""
    shapes = [tuple(first_shape)]
    for ch in chain[:-1]:
        shapes.append(chunk_out_shape(plan, ch, shapes[-1]))
    return shapes


def branch_in_shape(plan, d: int) -> tuple[int, ...]:
    """Per-sample input shape a branch reads (a row view of the input for ``concat``)."""
    view = plan.branches[d].view
    if view is None:
        return tuple(plan.input_shape)
    c, _, *rest = plan.input_shape
    return (c, view[1] - view[0], *rest)


# --------------------------------------------------------------------------- the operations

@dataclass(frozen=True)
class Run:
    """A chunk's forward or backward on its node.

    Attributes:
        phase: ``forward`` or ``backward``.
        chain: the branch whose chain it belongs to, or :data:`TRUNK`.
        index: the chunk's position in that chain.
        chunk: the chunk.
        in_shape: per-sample input shape.
        input_grad: the chunk's input needs a gradient (it is not the data itself): forward makes the
            input a leaf that will receive it, backward computes it.
    """

    phase: str
    chain: int
    index: int
    chunk: Chunk
    in_shape: tuple[int, ...]
    input_grad: bool


@dataclass(frozen=True)
class Handoff:
    """A hand-off from ``src`` to ``dst``.

    Attributes:
        kind: ``activations``, ``gradients``, ``labels`` (per sample: the shape is times the batch) or
            ``params_up``, ``params_down`` (a stage's state: the shape is whole).
        src: sending node.
        dst: receiving node.
        shape: per-sample shape (batch kinds) or the whole shape (params).
        dtype: ``float32`` or ``int64``.
        chain: the chain whose value it carries (batch kinds; :data:`TRUNK` for the join's gradient).
    """

    kind: str
    src: str
    dst: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    chain: int = 0

    def full_shape(self, k: int) -> tuple[int, ...]:
        """The shape of what travels for a micro-batch of ``k`` samples."""
        return (k, *self.shape) if self.kind in BATCH_KINDS else self.shape


@dataclass(frozen=True)
class Loss:
    """The loss of ``chain``'s last output on ``node`` (the labels have arrived there)."""

    chain: int
    node: str


@dataclass(frozen=True)
class Join:
    """``concat``: on ``node``, the branches' outputs become leaves joined along the rows (dim 2)."""

    node: str


@dataclass(frozen=True)
class Split:
    """``concat``: on ``node``, the join's gradient is split back into the branches' leaves."""

    node: str


def run_event(op: Run, where: tuple[int, int, int, int], k: int) -> Compute:
    """The event of a :class:`Run` at ``where`` = (round, step, branch, micro) for ``k`` samples."""
    return Compute(*where, op.chunk.node, op.chunk.blocks, op.in_shape, k, op.phase,
                   op.input_grad if op.phase == "backward" else False)


def hop_event(hop: Handoff, where: tuple[int, int, int, int], k: int = 0) -> Transfer:
    """The event of a :class:`Handoff` as declared (shape, dtype, bytes = numel x element size)."""
    shape = hop.full_shape(k)
    return Transfer(*where, hop.src, hop.dst, hop.kind, shape, hop.dtype, math.prod(shape) * ELEMENT_BYTES[hop.dtype])


def _forward(c: int, chain: list[Chunk], shapes, reads_data: bool) -> list:
    ops: list = []
    for i, ch in enumerate(chain):
        if i > 0 and ch.node != chain[i - 1].node:
            ops.append(Handoff("activations", chain[i - 1].node, ch.node, shapes[i], chain=c))
        ops.append(Run("forward", c, i, ch, shapes[i], i > 0 or not reads_data))
    return ops


def _backward(c: int, chain: list[Chunk], shapes, reads_data: bool) -> list:
    ops: list = []
    for i in range(len(chain) - 1, -1, -1):
        ch = chain[i]
        ops.append(Run("backward", c, i, ch, shapes[i], i > 0 or not reads_data))
        if i > 0 and chain[i - 1].node != ch.node:
            ops.append(Handoff("gradients", ch.node, chain[i - 1].node, shapes[i], chain=c))
    return ops


def _loss(c: int, data_node: str, loss_node: str) -> list:
    ops: list = [Loss(c, loss_node)]
    if loss_node != data_node:
        ops.insert(0, Handoff("labels", data_node, loss_node, (), "int64", chain=c))
    return ops


@dataclass(frozen=True)
class Chains:
    """What every batch of a plan runs through: per branch its chain of chunks and their per-sample
    input shapes, and for ``concat`` the trunk's (its chain :data:`TRUNK`) and each branch's output."""

    chains: tuple[tuple[Chunk, ...], ...]
    shapes: tuple[tuple[tuple[int, ...], ...], ...]
    trunk: tuple[Chunk, ...] = ()
    trunk_shapes: tuple[tuple[int, ...], ...] = ()
    outs: tuple[tuple[int, ...], ...] = ()


def plan_chains(plan) -> Chains:
    """The chains of every branch of ``plan`` (and of its trunk after a ``concat`` join)."""
    D = len(plan.branches)
    chains = [branch_chain(plan, d) for d in range(D)]
    shapes = [chain_in_shapes(plan, chains[d], branch_in_shape(plan, d)) for d in range(D)]
    if plan.branch_order != "lockstep":
        return Chains(tuple(map(tuple, chains)), tuple(map(tuple, shapes)))
    trunk = trunk_chain(plan)
    outs = [chunk_out_shape(plan, chains[d][-1], shapes[d][-1]) for d in range(D)]
    return Chains(tuple(map(tuple, chains)), tuple(map(tuple, shapes)), tuple(trunk),
                  tuple(chain_in_shapes(plan, trunk, plan.junction_shape())), tuple(outs))


@dataclass(frozen=True, eq=False)
class MicroProgram:
    """The operations of one micro-batch, in order (:func:`micro_program`), and their events.

    Attributes:
        ops: :class:`Run`, :class:`Handoff`, :class:`Loss`, :class:`Join`, :class:`Split` operations.
    """

    ops: tuple
    _fields: dict = field(default_factory=dict, repr=False)  # k -> the events' fields after ``where``

    def events(self, where: tuple[int, int, int, int], k: int) -> list:
        """The events of the program's :class:`Run` and :class:`Handoff` operations for a micro-batch of
        ``k`` samples at ``where``: :func:`run_event` and :func:`hop_event`, built once per ``k``."""
        fields = self._fields.get(k)
        if fields is None:
            zero = (0, 0, 0, 0)
            fields = self._fields[k] = [
                (type(e), tuple(e.__dict__.values())[4:])
                for e in (run_event(op, zero, k) if isinstance(op, Run) else hop_event(op, zero, k)
                          for op in self.ops if isinstance(op, (Run, Handoff)))]
        return [cls(*where, *rest) for cls, rest in fields]


def micro_program(plan, chains: Chains, branch: int) -> MicroProgram:
    """The operations of one micro-batch of ``branch`` (-1: every branch in lockstep), in order.

    One branch: its chain forward (activations handed across every node boundary), the labels to the
    loss node, the loss, the chain backward (gradients handed back). Lockstep (``concat``): every
    branch forward and its output to the join node, the join, the trunk forward, labels and loss, the
    trunk backward, the split, every branch's gradient back and its backward.
    """
    if plan.branch_order != "lockstep":
        chain, shapes = chains.chains[branch], chains.shapes[branch]
        return MicroProgram(tuple(_forward(branch, chain, shapes, True)
                                  + _loss(branch, plan.branches[branch].data_node, chain[-1].node)
                                  + _backward(branch, chain, shapes, True)))
    trunk, join = chains.trunk, chains.trunk[0].node
    ops: list = []
    for d, chain in enumerate(chains.chains):
        ops += _forward(d, chain, chains.shapes[d], True)
        if chain[-1].node != join:
            ops.append(Handoff("activations", chain[-1].node, join, chains.outs[d], chain=d))
    ops.append(Join(join))
    ops += _forward(TRUNK, trunk, chains.trunk_shapes, False)
    ops += _loss(TRUNK, plan.branches[0].data_node, trunk[-1].node)
    ops += _backward(TRUNK, trunk, chains.trunk_shapes, False)
    ops.append(Split(join))
    for d, chain in enumerate(chains.chains):
        if chain[-1].node != join:
            ops.append(Handoff("gradients", join, chain[-1].node, chains.outs[d], chain=d))
        ops += _backward(d, chain, chains.shapes[d], True)
    return MicroProgram(tuple(ops))


# --------------------------------------------------------------------------- the round

@dataclass(frozen=True)
class StageHops:
    """One stage position of a relay or a sync: its state's size and the hops that carry it.

    ``up[d]`` / ``down[d]``: the hop of branch ``d``'s copy to / from the aggregator (None where the
    branch's stage holder is the aggregator itself). A relay has one entry each: the previous client's
    copy up, the next client's down.
    """

    stage: int
    numel: int
    up: tuple[Handoff | None, ...]
    down: tuple[Handoff | None, ...]


@dataclass(frozen=True)
class Relay:
    """Split learning's hand-over before ``dst``'s turn: ``src``'s head up to the server and down to ``dst``."""

    step: int
    src: int
    dst: int
    stages: tuple[StageHops, ...]


@dataclass(frozen=True)
class BatchStep:
    """One batch: the program of each of its micro-batches (:func:`micro_program`)."""

    batch: Batch
    program: MicroProgram


@dataclass(frozen=True)
class Sync:
    """FedAvg at the end of a round, stage position by stage position, through the aggregator, of the
    branches that trained (``branches``; the others neither send nor receive)."""

    step: int
    stages: tuple[StageHops, ...]
    branches: tuple[int, ...] = ()


@dataclass(frozen=True)
class CatchUp:
    """Stale branches fetch the aggregator's last average before their first batch of the round
    (:mod:`fplstudy.plans.dynamics`): per stage position, ``down[i]`` carries it to ``branches[i]``'s holder."""

    step: int
    stages: tuple[StageHops, ...]
    branches: tuple[int, ...]


def _params(kind: str, src: str, dst: str, numel: int) -> Handoff | None:
    return None if src == dst else Handoff(kind, src, dst, (numel,))


def relay_item(plan, step: int, src: int, dst: int) -> Relay:
    """The hand-over of the head from branch ``src`` to branch ``dst`` at ``step``."""
    agg = plan.aggregator
    stages = []
    for s, (a, b) in enumerate(zip(plan.branches[src].stages, plan.branches[dst].stages)):
        numel = stage_numel(plan, a)
        stages.append(StageHops(s, numel, (_params("params_up", a.node, agg, numel),),
                                (_params("params_down", agg, b.node, numel),)))
    return Relay(step, src, dst, tuple(stages))


def sync_item(plan, step: int, branches: tuple[int, ...] | None = None) -> Sync:
    """The FedAvg of every branch stage position at ``step`` over ``branches`` (None: all; adapters stay
    local). ``up`` / ``down`` hold one hop per branch of ``branches``, in that order."""
    agg = plan.aggregator
    branches = tuple(range(len(plan.branches))) if branches is None else tuple(branches)
    stages = []
    for s in range(len(plan.branches[0].stages)):
        numel = stage_numel(plan, plan.branches[0].stages[s])
        nodes = [plan.branches[d].stages[s].node for d in branches]
        stages.append(StageHops(s, numel, tuple(_params("params_up", n, agg, numel) for n in nodes),
                                tuple(_params("params_down", agg, n, numel) for n in nodes)))
    return Sync(step, tuple(stages), branches)


def catch_up_item(plan, step: int, branches: tuple[int, ...]) -> CatchUp:
    """The fetch of the aggregator's last average by the stale ``branches`` at ``step``."""
    agg = plan.aggregator
    stages = []
    for s in range(len(plan.branches[0].stages)):
        numel = stage_numel(plan, plan.branches[0].stages[s])
        stages.append(StageHops(s, numel, (), tuple(_params("params_down", agg, plan.branches[d].stages[s].node,
                                                            numel) for d in branches)))
    return CatchUp(step, tuple(stages), tuple(branches))


def everyone(plan, rnd: int):
    """The turnout of a round without dynamics (:class:`fplstudy.plans.dynamics.Turnout`'s fields, as a plain
    namespace: this module does not import dynamics): every branch trains, the round syncs when due, SL's
    head comes from the last client (none before the run's first turn), every node is priced."""
    D = len(plan.branches)
    holder = (D - 1 if rnd > 0 else None) if plan.branch_order == "turns" else None
    return _Everyone(frozenset(), tuple(range(D)), sync_due(plan, rnd), (), holder,
                     frozenset(n.name for n in plan.nodes))


@dataclass(frozen=True)
class _Everyone:
    absent: frozenset
    active: tuple
    syncs: bool
    catch_up: tuple
    holder: int | None
    engaged: frozenset
    slow: tuple = ()
    late: tuple = ()
    kept: tuple = ()
    wait_s: float = 0.0


def round_program(plan, batches: list[Batch], rnd: int, chains: Chains | None = None,
                  ops: dict | None = None, turnout=None) -> list:
    """What round ``rnd`` does, in order: a :class:`CatchUp` of the stale branches, a :class:`Relay` before
    each SL turn (from the head's holder; none before the run's first turn), a :class:`BatchStep` per batch
    of a branch that trains, and a :class:`Sync` of those branches at the end of a round that syncs.

    Args:
        plan: the plan.
        batches: :func:`round_batches` (the same every round).
        rnd: the round, 0-based.
        chains: :func:`plan_chains` (computed when None).
        ops: a cache of :func:`micro_program` by branch, kept by the caller across rounds (the
            programs then build each kind of micro-batch's events once).
        turnout: who takes part (:func:`fplstudy.plans.dynamics.turnouts`); None = everyone (:func:`everyone`).
            A lost round (no branch) has no items. A branch keeps its batches' step numbers; a late branch
            (``turnout.late``) runs only its first ``turnout.kept`` batches and is left out of the sync.
    """
    chains = chains or plan_chains(plan)
    ops = {} if ops is None else ops
    turnout = turnout if turnout is not None else everyone(plan, rnd)
    active = set(turnout.active)
    out: list = []
    if not active:
        return out
    if turnout.catch_up:
        first = next(b.step for b in batches if b.branch < 0 or b.branch in active)
        out.append(catch_up_item(plan, first, turnout.catch_up))
    turn, prev = None, turnout.holder
    kept = dict(turnout.kept)
    for batch in batches:
        if batch.branch >= 0 and batch.branch not in active:
            continue
        if batch.branch in kept:
            if kept[batch.branch] <= 0:
                continue  # a late branch stopped at the deadline
            kept[batch.branch] -= 1
        if plan.branch_order == "turns" and batch.branch != turn:
            if prev is not None and prev != batch.branch:
                out.append(relay_item(plan, batch.step, prev, batch.branch))
            turn = prev = batch.branch
        if batch.branch not in ops:
            ops[batch.branch] = micro_program(plan, chains, batch.branch)
        out.append(BatchStep(batch, ops[batch.branch]))
    if turnout.syncs:
        out.append(sync_item(plan, len(batches), tuple(d for d in turnout.active if d not in turnout.late)))
    return out


def item_events(item, rnd: int) -> list:
    """The events of one item of :func:`round_program` in round ``rnd``, from the program alone."""
    if isinstance(item, BatchStep):
        b = item.batch
        events: list = []
        for micro, k in enumerate(b.micro_sizes):
            events += item.program.events((rnd, b.step, b.branch, micro), k)
        return events
    if isinstance(item, Relay):
        return [hop_event(h, (rnd, item.step, item.dst, -1)) for st in item.stages for h in (*st.up, *st.down)
                if h is not None]
    return [hop_event(h, (rnd, item.step, d, -1)) for st in item.stages for hops in (st.up, st.down)
            for d, h in zip(item.branches, hops) if h is not None]
