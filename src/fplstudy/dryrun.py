"""Dry run: the event stream, ledger and cost totals of a plan, without training.

Costs do not depend on the weights: what every node computes and sends is fixed by the plan, the
model's block profiles and the shard sizes. :func:`plan_events` replays the engine's schedule
(:func:`fplstudy.engine.round_batches`, :func:`~fplstudy.engine.branch_chain`, sync and relay, in the
same order, with the same fields) without a tensor, so a dry run's ledger equals, row for row, the
ledger of a real run of the same plan (tests/test_costs.py checks it for every strategy). Only the
dataset's labels are read (the partition of the shards depends on them).

**Declared shape.** Where a torchvision dataset's files are not on disk (MNIST, Fashion-MNIST,
CIFAR-10), the dry run prices the plan on the dataset's declared shape instead: its published sizes,
input shape and per-class counts (:data:`fplstudy.datasets.DATASET_CLASS_COUNTS`). The partition is
drawn, with the plan's seed, on a label vector with those class counts; every partitioner's shard sizes
depend only on the class counts (not on the order of the labels), so where the files exist the two dry
runs are equal row for row (tests/test_scale.py checks it). :attr:`DryRun.priced_from` says which it
was. A seeded training subset (``max_train_samples``) of a label-skewed partition (``dirichlet``,
``shards``) is refused on the declared shape: the subset's class counts depend on the files' label order.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fplstudy.config import Config
from fplstudy.events import Compute, Event, Transfer
from fplstudy.ledger import Pricer, chunk_profiles, price, totals
from fplstudy.memory import peak_memory
from fplstudy.plan import Plan, resolve
from fplstudy.profiles import Profiles, check_profiles

F32, I64 = 4, 8  # bytes per element
FROM_FILES, FROM_DECLARED = "files", "declared shape"  # what a dry run's shard sizes were drawn on


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
        priced_from: :data:`FROM_FILES` (the dataset's labels were read) or :data:`FROM_DECLARED`
            (its published class counts, no files).
    """

    plan: Plan
    shard_sizes: list[int]
    events: list[Event]
    ledger: pd.DataFrame
    totals: dict
    memory: pd.DataFrame
    priced_from: str = FROM_FILES


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


class _Chains:
    """What every batch of a plan runs through: the branches' chains and shapes, the trunk's (lockstep)."""

    def __init__(self, plan: Plan) -> None:
        from fplstudy.engine import branch_chain, branch_in_shape, chain_in_shapes, trunk_chain

        D = len(plan.branches)
        self.plan = plan
        self.chains = [branch_chain(plan, d) for d in range(D)]
        self.shapes = [chain_in_shapes(plan, self.chains[d], branch_in_shape(plan, d)) for d in range(D)]
        self.trunk = trunk_chain(plan)
        if plan.schedule == "lockstep":
            self.tshapes = chain_in_shapes(plan, self.trunk, plan.junction_shape())
            self.outs = [chunk_profiles(plan, self.chains[d][-1].blocks, self.shapes[d][-1])[-1].out_shape
                         for d in range(D)]

    def emit(self, em: _Emitter, rnd: int, item: tuple) -> None:
        """Emit the events of one item of :func:`_round_program` in round ``rnd``."""
        plan, what, step, arg = self.plan, *item
        agg = plan.aggregator
        if what == "relay":
            src_b, dst_b = arg
            for a, b in zip(plan.branches[src_b].stages, plan.branches[dst_b].stages):
                where = (rnd, step, dst_b, -1)
                numel = _stage_numel(plan, a)
                if a.node != agg:
                    em.move(a.node, agg, "params_up", (numel,), where)
                if b.node != agg:
                    em.move(agg, b.node, "params_down", (numel,), where)
        elif what == "sync":
            for s in range(len(plan.branches[0].stages)):
                numel = _stage_numel(plan, plan.branches[0].stages[s])
                for kind in ("params_up", "params_down"):
                    for d, b in enumerate(plan.branches):
                        node = b.stages[s].node
                        if node != agg:
                            src, dst = (node, agg) if kind == "params_up" else (agg, node)
                            em.move(src, dst, kind, (numel,), (rnd, step, d, -1))
        else:
            self.batch(em, rnd, arg)

    def batch(self, em: _Emitter, rnd: int, batch) -> None:
        plan, chains, shapes = self.plan, self.chains, self.shapes
        for micro, k in enumerate(batch.micro_sizes):
            where = (rnd, batch.step, batch.branch, micro)
            if plan.schedule != "lockstep":
                d = batch.branch
                em.forward(chains[d], shapes[d], where, k)
                em.labels(plan.branches[d].data_node, chains[d][-1].node, where, k)
                em.backward(chains[d], shapes[d], where, k)
                continue
            trunk, join = self.trunk, self.trunk[0].node
            for d in range(len(plan.branches)):
                em.forward(chains[d], shapes[d], where, k)
                if chains[d][-1].node != join:
                    em.move(chains[d][-1].node, join, "activations", (k, *self.outs[d]), where)
            em.forward(trunk, self.tshapes, where, k)
            em.labels(plan.branches[0].data_node, trunk[-1].node, where, k)
            em.backward(trunk, self.tshapes, where, k, reads_data=False)
            for d in range(len(plan.branches)):
                if chains[d][-1].node != join:
                    em.move(join, chains[d][-1].node, "gradients", (k, *self.outs[d]), where)
                em.backward(chains[d], shapes[d], where, k)


def _round_program(plan: Plan, batches: list, rnd: int) -> list[tuple]:
    """What round ``rnd`` does, in the engine's order: ``("relay", step, (src_branch, dst_branch))`` (SL
    turns hand the head over, but not before the first turn of the run), ``("batch", step, batch)``, and
    ``("sync", step, None)`` at the end of a round that syncs."""
    from fplstudy.engine import sync_due

    D = len(plan.branches)
    out, turn = [], None
    for batch in batches:
        if plan.schedule == "turns" and batch.branch != turn:
            if D > 1 and not (rnd == 0 and turn is None):
                out.append(("relay", batch.step, ((batch.branch - 1) % D, batch.branch)))
            turn = batch.branch
        out.append(("batch", batch.step, batch))
    if sync_due(plan, rnd):
        out.append(("sync", len(batches), None))
    return out


def _round_kind(plan: Plan, rnd: int) -> tuple[bool, bool]:
    """What :func:`_round_program` reads of ``rnd``: whether it is the first round of SL turns (no
    hand-over before the first client) and whether the round syncs. Rounds of one kind are the same."""
    from fplstudy.engine import sync_due

    return plan.schedule == "turns" and rnd == 0, sync_due(plan, rnd)


def plan_events(plan: Plan, shard_sizes: list[int]) -> list[Event]:
    """The events a real run of ``plan`` emits, computed from the plan alone (no tensors).

    Args:
        plan: the plan.
        shard_sizes: training samples per branch (``engine.load_partitioned(plan)[1].samples()``).

    Returns:
        The event stream of all ``plan.config.rounds`` rounds, in the engine's order.
    """
    from fplstudy.engine import round_batches

    em = _Emitter()
    batches = round_batches(plan, shard_sizes)  # the same every round
    chains = _Chains(plan)
    for rnd in range(plan.config.rounds):
        for item in _round_program(plan, batches, rnd):
            chains.emit(em, rnd, item)
    return em.events


_BATCHES: dict[tuple, list] = {}


def price_plan(plan: Plan, shard_sizes: list[int], profiles: Profiles | None = None, fast: bool = True,
               ) -> pd.DataFrame:
    """The priced ledger of ``plan``, equal to ``price(plan, plan_events(plan, shard_sizes), profiles)``.

    The fast path never builds the run's event stream: the events of each kind of batch (branch and
    micro-batch sizes), relay and sync are emitted once, as :class:`fplstudy.ledger.Template` s, a round
    is the list of its items' templates, and rounds with the same items (all but the first of an SL
    relay, and those that sync or not) are scheduled and summed once. Where the fast schedule does not
    hold (:func:`fplstudy.makespan.schedule_fixed_order`), or ``fast=False``, the reference prices the
    event stream.
    """
    from fplstudy.engine import round_batches

    profiles = profiles or check_profiles(plan)
    pricer = Pricer(plan, profiles)
    if fast and pricer.applies:
        cfg = plan.config  # what round_batches reads of a plan (Batch is frozen: the lists are shared)
        key = (tuple(shard_sizes), cfg.batch_size, cfg.local_epochs, cfg.micro_batches, plan.schedule)
        if key not in _BATCHES:
            _BATCHES[key] = round_batches(plan, shard_sizes)
        batches = _BATCHES[key]
        chains = _Chains(plan)
        templates: dict[tuple, object] = {}
        priced: dict[tuple, tuple | None] = {}
        rounds = []
        for rnd in range(plan.config.rounds):
            kind = _round_kind(plan, rnd)
            if kind not in priced:
                segments = []
                for item in _round_program(plan, batches, rnd):
                    what, step, arg = item
                    key = (what, (arg.branch, arg.micro_sizes) if what == "batch" else arg)
                    if key not in templates:
                        em = _Emitter()
                        chains.emit(em, rnd, item)
                        templates[key] = pricer.template(em.events)
                    segments.append((step, templates[key]))
                priced[kind] = pricer.price_round(segments)
            if priced[kind] is None:
                break
            rounds.append(priced[kind])
        else:
            return pricer.ledger(rounds)
    return price(plan, plan_events(plan, shard_sizes), profiles, fast=False)


def priced_from(cfg: Config | Plan) -> str:
    """:data:`FROM_DECLARED` when ``cfg``'s dataset has declared class counts and its files are not in
    ``data_dir``, else :data:`FROM_FILES` (digits and mnist5k ship with their packages)."""
    from fplstudy.datasets import DATASET_CLASS_COUNTS, files_present

    cfg = cfg.config if isinstance(cfg, Plan) else cfg
    if cfg.dataset in DATASET_CLASS_COUNTS and not files_present(cfg.dataset, cfg.data_dir):
        return FROM_DECLARED
    return FROM_FILES


def declared_shard_sizes(plan: Plan, class_counts: tuple[int, ...] | None = None) -> list[int]:
    """Training samples per branch drawn on the dataset's declared class counts, without its files.

    The partition is :func:`fplstudy.partition.make_partition` with the plan's seed on
    :func:`fplstudy.datasets.declared_labels`, checked as :func:`fplstudy.engine.load_partitioned`
    checks it (a bad setting or an empty branch is a ConfigError naming the key).

    Args:
        plan: the plan.
        class_counts: training samples per class; None = the published counts
            (:data:`fplstudy.datasets.DATASET_CLASS_COUNTS`).

    Returns:
        Samples per branch, equal to :func:`shard_sizes` on the dataset's files.

    Raises:
        ConfigError: for a dataset without declared counts, ``max_train_samples`` with a label-skewed
            partition, or a partition that cannot be drawn.
    """
    import numpy as np

    from fplstudy.config import ConfigError
    from fplstudy.datasets import DATASET_CLASS_COUNTS, DATASET_META, declared_labels
    from fplstudy.partition import make_partition

    cfg = plan.config
    if class_counts is None:
        if cfg.dataset not in DATASET_CLASS_COUNTS:
            raise ConfigError("dataset", cfg.dataset, f"no declared class counts to price it without its files; "
                                                      f"use one of {', '.join(DATASET_CLASS_COUNTS)} or place the files")
        labels = declared_labels(cfg.dataset)
    else:
        labels = np.repeat(np.arange(len(class_counts), dtype=np.int64), class_counts)
    n = len(labels)
    if cfg.max_train_samples is not None and cfg.max_train_samples < n:
        if cfg.partition in ("dirichlet", "shards"):
            raise ConfigError("max_train_samples", cfg.max_train_samples,
                              f"a seeded subset's class counts depend on the files' label order, so "
                              f"partition={cfg.partition} cannot be priced on {cfg.dataset}'s declared shape; "
                              f"place the files in data_dir, use partition=iid, or leave max_train_samples out")
        labels = labels[:cfg.max_train_samples]  # iid and features read the number of samples only
    try:
        part = make_partition(cfg.partition, labels, len(plan.branches), seed=cfg.seed, alpha=cfg.alpha,
                              classes_per_node=cfg.classes_per_node, input_shape=DATASET_META[cfg.dataset][0])
    except ValueError as exc:
        raise ConfigError("partition", cfg.partition, str(exc)) from None
    sizes = [int(k) for k in part.samples()]
    empty = [d for d, k in enumerate(sizes) if k == 0]
    if empty:
        raise ConfigError("branches", len(plan.branches),
                          f"branch(es) {empty} get no training samples with partition={cfg.partition}; "
                          f"use fewer branches or more samples")
    return sizes


def shard_sizes(plan: Plan) -> list[int]:
    """Training samples per branch, as the engine partitions them: from the dataset's labels, or from
    its declared class counts where its files are not on disk (:func:`priced_from`)."""
    from fplstudy.engine import load_partitioned

    if priced_from(plan) == FROM_DECLARED:
        return declared_shard_sizes(plan)
    return [int(n) for n in load_partitioned(plan)[1].samples()]


_SHARD_SIZES: dict[tuple, list[int]] = {}


def cached_shard_sizes(plan: Plan) -> list[int]:
    """:func:`shard_sizes`, partitioned once per process for each dataset, partition setting and
    number of branches: the plan search and the teaching sliders price many plans of the same data.

    The cache key holds every config key the partition reads (dataset, ``data_dir``,
    ``max_train_samples``, ``test_fraction``, ``partition``, ``alpha``, ``classes_per_node``, ``seed``)
    and the number of branches; a dataset rewritten in place under the same ``data_dir`` during the
    process is not seen (use :func:`shard_sizes`).
    """
    cfg = plan.config
    key = (cfg.dataset, cfg.data_dir, cfg.max_train_samples, cfg.test_fraction, cfg.partition, cfg.alpha,
           cfg.classes_per_node, cfg.seed, len(plan.branches))
    if key not in _SHARD_SIZES:
        _SHARD_SIZES[key] = shard_sizes(plan)
    return list(_SHARD_SIZES[key])


def dry_run(cfg_or_plan: Config | Plan, *, shards: list[int] | None = None,
            profiles: Profiles | None = None) -> DryRun:
    """Events, ledger and totals of a plan without training.

    Args:
        cfg_or_plan: a validated config or a resolved plan.
        shards: training samples per branch; None = partition the dataset as the engine does (on its
            declared shape where its files are missing, :func:`shard_sizes`).
        profiles: device/link profiles; None = ``check_profiles(plan)``.

    Returns:
        A :class:`DryRun` (``priced_from`` says whether the dataset's files or its declared shape).

    Raises:
        ConfigError: for a bad plan or unknown/broken profiles (before any pricing).
    """
    plan = cfg_or_plan if isinstance(cfg_or_plan, Plan) else resolve(cfg_or_plan)
    profiles = profiles or check_profiles(plan)
    source = priced_from(plan)
    sizes = list(shards) if shards is not None else shard_sizes(plan)
    events = plan_events(plan, sizes)
    ledger = price(plan, events, profiles)
    return DryRun(plan, sizes, events, ledger, totals(plan, ledger), peak_memory(plan), source)
