"""Dry run: the event stream, ledger and cost totals of a plan, without training.

Costs do not depend on the weights: what every node computes and sends is fixed by the plan, the
model's block profiles and the shard sizes. :func:`plan_events` walks the round program that the
training engine executes (:func:`fplstudy.plans.program.round_program`: batches, chains of chunks, hand-offs,
relays and syncs) and turns each of its operations into its event without a tensor
(:func:`fplstudy.plans.program.item_events`), so a dry run's ledger equals, row for row, the ledger of a real
run of the same plan (tests/unit/costs/test_costs.py checks it for every strategy). Only the dataset's labels are
read (the partition of the shards depends on them).

**Declared shape.** Where a torchvision dataset's files are not on disk (MNIST, Fashion-MNIST,
CIFAR-10), the dry run prices the plan on the dataset's declared shape instead: its published sizes,
input shape and per-class counts (:data:`fplstudy.facts.datasets.DATASET_CLASS_COUNTS`). The partition is
drawn, with the plan's seed, on a label vector with those class counts; every partitioner's shard sizes
depend only on the class counts (not on the order of the labels), so where the files exist the two dry
runs are equal row for row (tests/unit/study/test_scale.py checks it). :attr:`DryRun.priced_from` says which it
was. A seeded training subset (``max_train_samples``) of a label-skewed partition (``dirichlet``,
``shards``) is refused on the declared shape: the subset's class counts depend on the files' label order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from fplstudy.config import Config, ConfigError
from fplstudy.costs.ledger import Pricer, event_costs, price, totals
from fplstudy.costs.makespan import schedule_round
from fplstudy.costs.memory import MEMORY_SHARE, available_memory_bytes, gib, peak_memory
from fplstudy.facts.datasets import (
    DATASET_CLASS_COUNTS,
    DATASET_META,
    declared_labels,
    files_present,
)
from fplstudy.facts.partition import load_partitioned, make_partition
from fplstudy.facts.profiles import Profiles, check_profiles
from fplstudy.plans.dynamics import plan_turnouts, turnout_rule
from fplstudy.plans.events import Event
from fplstudy.plans.plan import Plan, resolve
from fplstudy.plans.program import (
    BatchStep,
    everyone,
    item_events,
    plan_chains,
    round_batches,
    round_program,
)

FROM_FILES, FROM_DECLARED = "files", "declared shape"  # what a dry run's shard sizes were drawn on


@dataclass
class DryRun:
    """What a dry run produced.

    Attributes:
        plan: the resolved plan.
        shard_sizes: training samples per branch.
        events: the analytic event stream (same as a real run's).
        ledger: the priced ledger (:func:`fplstudy.costs.ledger.price`).
        totals: the cost totals (:func:`fplstudy.costs.ledger.totals`).
        memory: peak memory per node (:func:`fplstudy.costs.memory.peak_memory`).
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


def plan_events(plan: Plan, shard_sizes: list[int]) -> list[Event]:
    """The events a real run of ``plan`` emits, computed from the plan alone (no tensors).

    Args:
        plan: the plan.
        shard_sizes: training samples per branch (``partition.load_partitioned(plan)[1].samples()``).

    Returns:
        The event stream of all ``plan.config.rounds`` rounds, in the engine's order.
    """
    batches, chains, programs = round_batches(plan, shard_sizes), plan_chains(plan), {}  # the same every round
    turnouts = plan_turnouts(plan)
    events: list[Event] = []
    for rnd in range(plan.config.rounds):
        for item in round_program(plan, batches, rnd, chains, programs, turnouts[rnd] if turnouts else None):
            events += item_events(item, rnd)
    return events


_BATCHES: dict[tuple, list] = {}


@dataclass
class RoundShapes:
    """The part of a plan's fast pricing that its prices do not change (:func:`round_shapes`): the same for
    every placement of the plan's nodes and every device and link profile.

    Attributes:
        kinds: the kind of every round, in round order (:func:`round_kind` of its turnout,
            :func:`fplstudy.plans.program.everyone` without dynamics), which is all the round program reads of it.
        items: each kind's round program as ``(step, key)`` segments, in order (empty: a lost round).
        events: the events of each key (a kind of batch, relay, sync or catch-up), to be priced as one
            template.
    """

    kinds: list[tuple]
    items: dict[tuple, list[tuple[int, tuple]]]
    events: dict[tuple, list[Event]]


def round_shapes(plan: Plan, shard_sizes: list[int]) -> RoundShapes:
    """The :class:`RoundShapes` of ``plan``: each kind of round's program emitted once, each kind of batch
    (branch and micro-batch sizes), relay, sync and catch-up's events once."""
    cfg = plan.config  # what round_batches reads of a plan (Batch is frozen: the lists are shared)
    key = (tuple(shard_sizes), cfg.batch_size, cfg.last_batch, cfg.local_epochs, cfg.micro_batches, plan.branch_order)
    if key not in _BATCHES:
        _BATCHES[key] = round_batches(plan, shard_sizes)
    batches = _BATCHES[key]
    chains, programs = plan_chains(plan), {}
    turnouts = plan_turnouts(plan)
    kinds: list = []
    items: dict = {}
    events: dict[tuple, list[Event]] = {}
    for rnd in range(cfg.rounds):
        kind = round_kind(turnouts[rnd] if turnouts else everyone(plan, rnd))
        kinds.append(kind)
        if kind in items:
            continue
        segments = []
        for item in round_program(plan, batches, rnd, chains, programs, kind):
            if isinstance(item, BatchStep):
                key = ("batch", item.batch.branch, item.batch.micro_sizes)
            else:
                key = (type(item).__name__, getattr(item, "src", None), getattr(item, "dst", None),
                       getattr(item, "branches", None))
            if key not in events:
                events[key] = item_events(item, rnd)
            segments.append((item.batch.step if isinstance(item, BatchStep) else item.step, key))
        items[kind] = segments
    return RoundShapes(kinds, items, events)


_LOST = object()  # price_rounds' mark of a lost round's kind


def price_rounds(pricer: Pricer, shapes: RoundShapes) -> list[tuple | None] | None:
    """Every round's :meth:`fplstudy.costs.ledger.Pricer.price_round`, each kind of round priced once (None for
    a lost round: it costs nothing); None where the fast schedule does not hold for a round."""
    templates: dict[tuple, object] = {}  # by (item key, the round's stragglers, entry: Pricer.entries)
    priced: dict = {}
    rounds: list[tuple | None] = []
    for kind in shapes.kinds:
        if kind not in priced:
            if not shapes.items[kind]:
                priced[kind] = _LOST
            else:
                segments = []
                keys = [key for _, key in shapes.items[kind]]
                entries = pricer.entries([shapes.events[key] for key in keys], keys)
                for (step, key), entry in zip(shapes.items[kind], entries):
                    tk = (key, kind.slow, entry)
                    if tk not in templates:
                        templates[tk] = pricer.template(shapes.events[key], dict(kind.slow), entry)
                    segments.append((step, templates[tk]))
                priced[kind] = pricer.price_round(segments, kind.engaged, kind.wait_s)
        if priced[kind] is None:
            return None
        rounds.append(None if priced[kind] is _LOST else priced[kind])
    return rounds


def price_plan(plan: Plan, shard_sizes: list[int], profiles: Profiles | None = None, fast: bool = True,
               shapes: RoundShapes | None = None) -> pd.DataFrame:
    """The priced ledger of ``plan``, equal to ``price(plan, plan_events(plan, shard_sizes), profiles)``.

    The fast path never builds the run's event stream: the events of each kind of batch (branch and
    micro-batch sizes), relay and sync are emitted once (:func:`round_shapes`; pass ``shapes`` to reuse
    them for another placement or profile of the same plan), as :class:`fplstudy.costs.ledger.Template` s, a
    round is the list of its items' templates, and rounds with the same items (all but the first of an SL
    relay, and those that sync or not) are scheduled and summed once (:func:`price_rounds`). Where the
    fast schedule does not hold (:func:`fplstudy.costs.makespan.schedule_fixed_order`), or ``fast=False``, the
    reference prices the event stream.
    """
    profiles = profiles or check_profiles(plan)
    pricer = Pricer(plan, profiles)
    if fast and pricer.applies:
        rounds = price_rounds(pricer, shapes or round_shapes(plan, shard_sizes))
        if rounds is not None:
            return pricer.ledger(rounds)
    return price(plan, plan_events(plan, shard_sizes), profiles, fast=False)


def priced_from(cfg: Config | Plan) -> str:
    """:data:`FROM_DECLARED` when ``cfg``'s dataset has declared class counts and its files are not in
    ``data_dir``, else :data:`FROM_FILES` (digits and mnist5k ship with their packages)."""
    cfg = cfg.config if isinstance(cfg, Plan) else cfg
    if cfg.dataset in DATASET_CLASS_COUNTS and not files_present(cfg.dataset, cfg.data_dir):
        return FROM_DECLARED
    return FROM_FILES


def declared_shard_sizes(plan: Plan, class_counts: tuple[int, ...] | None = None) -> list[int]:
    """Training samples per branch drawn on the dataset's declared class counts, without its files.

    The partition is :func:`fplstudy.facts.partition.make_partition` with the plan's seed on
    :func:`fplstudy.facts.datasets.declared_labels`, checked as :func:`fplstudy.facts.partition.load_partitioned`
    checks it (a bad setting or an empty branch is a ConfigError naming the key).

    Args:
        plan: the plan.
        class_counts: training samples per class; None = the published counts
            (:data:`fplstudy.facts.datasets.DATASET_CLASS_COUNTS`).

    Returns:
        Samples per branch, equal to :func:`shard_sizes` on the dataset's files.

    Raises:
        ConfigError: for a dataset without declared counts, ``max_train_samples`` with a label-skewed
            partition, or a partition that cannot be drawn.
    """
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
    plan = settle_deadline(plan, sizes, profiles)
    check_dry_run_memory(plan, sizes)
    events = plan_events(plan, sizes)
    ledger = price(plan, events, profiles)
    return DryRun(plan, sizes, events, ledger, totals(plan, ledger), peak_memory(plan), source)


EVENT_BYTES = 1000  # memory a dry run holds per event, its share of the ledger included: 450-600 B measured with
#                    tracemalloc (digits, fl, sl and fpl, 10 and 40 rounds), doubled for what tracemalloc does not see


def dry_run_events(plan: Plan, shard_sizes: list[int]) -> int:
    """How many events :func:`plan_events` would list for ``plan``, counted from each kind of round's program
    (:func:`round_shapes`) without listing them."""
    shapes = round_shapes(plan, shard_sizes)
    per_kind = {kind: sum(len(shapes.events[key]) for _, key in segments) for kind, segments in shapes.items.items()}
    return sum(per_kind[kind] for kind in shapes.kinds)


def check_dry_run_memory(plan: Plan, shard_sizes: list[int], available: float | None = None) -> None:
    """Refuse a dry run whose event stream would not fit in memory, before it is built: ``EVENT_BYTES`` per event
    (:func:`dry_run_events`) against :data:`fplstudy.costs.memory.MEMORY_SHARE` of ``available`` bytes (None: this
    machine's available memory).

    Raises:
        ConfigError: naming ``rounds``, the estimated memory and the most rounds that fit.
    """
    rounds = plan.config.rounds
    events = dry_run_events(plan, shard_sizes)
    need = events * EVENT_BYTES
    budget = MEMORY_SHARE * (available_memory_bytes() if available is None else available)
    if need > budget:
        fit = max(0, int(rounds * budget / need))
        raise ConfigError("rounds", rounds, f"a dry run of {rounds} rounds lists {events:,} events, about {gib(need)}, "
                                            f"more than the {gib(budget)} this machine can spare; price at most {fit} "
                                            f"rounds (a plan without dynamics costs the same every sync period: "
                                            f"scale its totals) or use fplstudy explore, which prices one period")


def settle_deadline(plan: Plan, shard_sizes: list[int], profiles: Profiles | None = None) -> Plan:
    """``plan`` with every round's turnout settled under its ``round_deadline_s`` (the plan itself when it
    has none, or is settled already): :attr:`fplstudy.plans.plan.Plan.turnouts`, which the engine, the dry run and
    the ledger then read (:func:`fplstudy.plans.dynamics.plan_turnouts`).

    Round by round, in order (a late branch is stale afterwards, which changes the next rounds' catch-ups):
    a round that ends with a FedAvg is scheduled as planned, every branch that takes part syncing
    (:func:`fplstudy.costs.makespan.schedule_round` on the round's events priced with its stragglers); a branch
    whose last ``params_up`` finishes after the deadline is late, and keeps the batches it started before
    the deadline (see :mod:`fplstudy.plans.dynamics`, *Round deadline*). Rounds of one kind (:func:`round_kind`)
    are decided once.
    """
    cfg = plan.config
    if cfg.round_deadline_s is None or plan.turnouts is not None:
        return plan
    rule = turnout_rule(plan)
    profiles = profiles or check_profiles(plan)
    deadline = cfg.round_deadline_s
    batches, chains, programs = round_batches(plan, shard_sizes), plan_chains(plan), {}
    late: dict[int, dict[int, int]] = {}
    decided: dict = {}  # round kind -> {late branch: batches kept}
    planned = rule(late)
    for rnd in range(cfg.rounds):
        t = planned[rnd]
        if not t.syncs:
            continue
        kind = round_kind(t)
        if kind not in decided:
            decided[kind] = _late_branches(replace(plan, turnouts=tuple(planned)), rnd, t, deadline, profiles,
                                           round_program(plan, batches, rnd, chains, programs, t))
        if decided[kind]:
            late[rnd] = decided[kind]
            planned = rule(late)  # the late branches are stale in the rounds after this one
    return replace(plan, turnouts=tuple(planned))


def round_kind(turnout):
    """What a round's program and prices read of its turnout: the turnout without its absent nodes (they
    count only through ``engaged``); rounds of one kind have the same program, events and prices."""
    return replace(turnout, absent=frozenset())


def _late_branches(plan: Plan, rnd: int, turnout, deadline: float, profiles: Profiles, items: list
                   ) -> dict[int, int]:
    """``{late branch: batches it started before the deadline}`` of one round scheduled as planned."""
    events = [ev for item in items for ev in item_events(item, rnd)]
    _, seconds = event_costs(plan, events, profiles)
    sched = schedule_round(plan, events, seconds)
    arrival: dict[int, float] = {}
    step_start: dict[tuple[int, int], float] = {}  # (branch, step) -> when its first event started
    for ev, begin, end in zip(events, sched.start, sched.finish):
        if ev.micro == -1:
            if ev.kind == "params_up":
                arrival[ev.branch] = max(arrival.get(ev.branch, 0.0), end)
        elif ev.branch >= 0:
            step_start[(ev.branch, ev.step)] = min(step_start.get((ev.branch, ev.step), math.inf), begin)
    return {d: sum(1 for (b, _), begin in step_start.items() if b == d and begin < deadline)
            for d in turnout.active if arrival.get(d, 0.0) > deadline}
