"""Search over plans: enumerate every valid plan for a model and node count, price each, keep the front.

:func:`enumerate_plans` lists the configs of every plan shape that fits ``nodes`` edge nodes (strategy,
branches D, branch stages S_b, trunk stages S_t, junction index and mode, every placement of the cuts,
sync policy and period), keeping only those that :func:`fplstudy.plans.plan.resolve` accepts. :func:`price_candidate`
prices one plan with the dry run; :func:`explore` prices them all and returns a table with the
:func:`pareto_front` on the chosen objectives (default: total energy, bytes, makespan and the largest
per-node memory), after optional budgets (joules per node, bytes per round).

Speed: costs of a round depend only on the plan and on whether the round syncs, so :func:`price_candidate`
dry-runs one period of rounds (``sync_every`` rounds, one more for an SL relay whose first round has
no hand-over) and repeats its ledger rows over ``config.rounds`` rounds before summing them with
:func:`fplstudy.costs.ledger.totals`. The totals equal those of ``dry_run(config)`` exactly
(tests/unit/costs/test_search.py checks it). Shard sizes are partitioned once per number of branches
(:func:`fplstudy.costs.dryrun.cached_shard_sizes`).

What a search explains about itself: each plan's ``set`` column (:func:`plan_set`) holds every config key
that makes it, ``strategy`` and ``nodes`` first, so that ``fplstudy run`` with those pairs trains exactly that
plan; the refused candidates are counted by reason (:func:`refusal_reason`); the parts of the plan names are
decoded by :func:`decode_name` and put in words by :func:`name_legend`; and the time a search will take is
logged from the median of a sample of plans priced after the first (which pays for the FLOP profile and
shard sizes the others reuse).

Which nodes count: ``nodes`` is read as each strategy reads it (see :mod:`fplstudy.plans.strategies`); ``fl``
adds its aggregator, so the ``nodes_used`` column may be ``nodes + 1``; ``centralized`` only fits
``nodes=1``.

Memory: ``memory_fits`` says whether every node's peak memory fits its device's ``memory_bytes``
(:func:`fplstudy.costs.memory.misfits`); a plan that does not fit is not ``within_budget`` and not on the front
(a run refuses it: :func:`fplstudy.costs.memory.check_memory`).

Energy on a topology: the ledger charges the plan's nodes only; a point of the topology that hosts no plan
node but forwards its messages (a gateway left free, an access point) spends ``energy_j_network``
(:func:`network_joules`), and ``energy_j_site`` (the default energy objective) is both. Without it a search
would find it cheaper to put a stage behind a free relay. Without a topology both equal ``energy_j`` and 0.

**Placement search** (``search_placement=True``, ``fplstudy explore --search-placement``; the base config
needs ``topology``). On a heterogeneous site the question is also which node holds which part. The data
owners (:func:`data_owners`: each branch's first stage, ``mp``'s first stage) stay where the data is (where
the default placement rule puts them); every other plan node (later branch stages, trunk stages, a
dedicated aggregator) may go to any free topology node that can hold it (memory) and reaches the others
(:func:`placements`). The search space, and how it is bounded: plan shapes (as above) × injective
assignments of the movable nodes to the free nodes, counted once per class of interchangeable topology nodes
(:func:`interchangeable`: same device numbers, same hops to and from everyone, never inside another pair's
path; swapping two gives the same ledger, tests/unit/costs/test_placement_search.py checks it), and at most
``max_placements`` (default :data:`MAX_PLACEMENTS`) a shape: a shape with more is priced on its default
placement and a seeded sample (column ``placements_exhaustive`` False), so a search prices at most
shapes × ``max_placements`` plans. Each placement is priced from its shape's round programs, computed once
(:func:`price_placements`, equal to :func:`price_candidate` of the placed plan to 1e-12): benchmarks/placement_search.py
measures the rate (README).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from fplstudy.config import JUNCTIONS, Config, ConfigError, YamlError, make_config, parse_yaml
from fplstudy.costs.dryrun import (
    RoundShapes,
    cached_shard_sizes,
    price_plan,
    price_rounds,
    round_shapes,
)
from fplstudy.costs.ledger import Pricer, plan_totals, totals
from fplstudy.costs.makespan import fast_path_applies
from fplstudy.costs.memory import memory_rows, misfits
from fplstudy.facts.profiles import Profiles, check_profiles
from fplstudy.facts.topology import price_path
from fplstudy.plans.events import Transfer
from fplstudy.plans.plan import Plan, max_nodes, resolve, training_samples
from fplstudy.plans.strategies import CUTS, STRATEGIES, Axes, strategy

OBJECTIVES = ("energy_j_site", "bytes_total", "makespan_s", "memory_bytes_max_node")
FPL_SYNCS = ("none", "fedavg", "relay")
# config keys that describe the plan's shape; explore sets them, a base config must leave them out
SHAPE_KEYS = ("strategy", "nodes", "branches", "branch_stages", "trunk_stages", "junction", "junction_at",
              "branch_cuts", "trunk_cuts", "cut_by", "sync", "sync_every")
PLAN_COLUMNS = ("name", "strategy", "nodes", "nodes_used", "branches", "branch_stages", "trunk_stages",
                "junction", "junction_at", "branch_cuts", "trunk_cuts", "sync", "sync_every", "placement")
COST_COLUMNS = ("flops_total", "bytes_total", "bytes_per_round", "energy_j", "energy_j_max_node",
                "energy_j_network", "energy_j_site", "makespan_s", "memory_bytes_max_node", "model_params",
                "model_params_ratio")
MAX_PLACEMENTS = 1000  # placements priced per plan shape in a placement search, at most (explore's default)


@dataclass
class Exploration:
    """What :func:`explore` returns.

    Attributes:
        plans: one row per valid plan: :data:`PLAN_COLUMNS`, :data:`COST_COLUMNS`, ``within_budget``,
            ``on_front`` and ``overrides`` (the config keys that make the plan, a dict).
        front: the rows on the Pareto front (within budget), sorted by the first objective.
        objectives: the minimised columns.
        seconds: wall-clock time of enumeration and pricing.
        refused: configs that resolve refused (counted, not listed).
        refusals: how many were refused for each reason (:func:`refusal_reason`), most frequent first;
            the counts sum to ``refused``.
        repeats: candidates that gave a plan another candidate already gave under another spelling
            (:func:`plan_key`); the candidates tried are ``refused`` + ``repeats`` + the distinct valid plans.
    """

    plans: pd.DataFrame
    front: pd.DataFrame
    objectives: tuple[str, ...]
    seconds: float
    refused: int
    refusals: dict[str, int] = field(default_factory=dict)
    repeats: int = 0

    def configs(self, front_only: bool = True) -> list[Config]:
        """The configs of the front's plans (or of every plan), ready for ``fplstudy.train.runner.run``."""
        rows = self.front if front_only else self.plans
        return [make_config(o) for o in rows["overrides"]]


def _n_blocks(base: Config) -> int:
    from fplstudy.facts.datasets import DATASET_META
    from fplstudy.facts.flops import profile_model
    from fplstudy.facts.models import DATASET_DEFAULT_MODEL

    if base.dataset not in DATASET_META:
        resolve(base)  # raises the ConfigError that names the dataset
    shape, classes = DATASET_META[base.dataset]
    return len(profile_model(base.model or DATASET_DEFAULT_MODEL[base.dataset], tuple(shape), classes))


def _base_values(base: Config) -> dict[str, Any]:
    values = base.model_dump(exclude_defaults=True)
    for key in SHAPE_KEYS:
        values.pop(key, None)
    return values


def _candidates(base: Config, nodes: int, n_blocks: int, strategies: Iterable[str], junctions: Iterable[str],
                syncs: Iterable[str], sync_every: Iterable[int], cuts: str) -> Iterator[dict[str, Any]]:
    """Plan-shape overrides of every candidate plan (not yet checked by resolve): each strategy's own
    :attr:`fplstudy.plans.strategies.Strategy.candidates`, in the order of ``strategies``."""
    axes = Axes(nodes, n_blocks, tuple(junctions), tuple(syncs), tuple(sync_every), cuts,
                features=base.partition == "features")
    for s in strategies:
        yield from strategy(s, key="strategies").candidates(axes)


def enumerate_plans(base: Config | None = None, nodes: int | None = None, *,
                    strategies: Iterable[str] = STRATEGIES, junctions: Iterable[str] = JUNCTIONS,
                    syncs: Iterable[str] = FPL_SYNCS, sync_every: Iterable[int] = (1,), cuts: str = "all",
                    counted: Callable[[int, int], None] | None = None,
                    refusals: Counter | None = None) -> tuple[list[Plan], int]:
    """Every valid plan for ``nodes`` edge nodes, with the base config's model, data, devices and link.

    The named strategies keep their own sync (``fl``/``sfl`` FedAvg, ``sl`` relay, ``mp`` none); ``fpl``
    takes every sync in ``syncs``. Plans that are the same plan under two spellings are kept once:
    the same stages, junction and sync (e.g. ``relay`` or ``concat`` with one branch is ``none`` or
    ``shared``: one branch has nobody to relay to and one view is the whole input).

    Args:
        base: the fixed part of the plan (dataset, model, devices, link, rounds, batch size …); its
            shape keys (:data:`SHAPE_KEYS`) are ignored. None = the defaults.
        nodes: edge nodes; None = ``base.nodes``.
        strategies: which strategies to enumerate.
        junctions: junction modes for ``fpl``.
        syncs: sync policies for ``fpl``.
        sync_every: sync periods (rounds) for FedAvg plans.
        cuts: ``all`` — every placement of the stage cuts; ``balanced`` — only the cuts that balance
            FLOPs or block counts (``cut_by``), far fewer plans.
        counted: called with the number of candidates and of nodes once the node count is checked, before any
            candidate is resolved (a search says its size first).
        refusals: a Counter that gets one count per refused candidate, under :func:`refusal_reason`.

    Returns:
        ``(plans, refused)``: the resolved plans, and how many candidates resolve refused.
    """
    if cuts not in CUTS:
        raise ConfigError("cuts", cuts, f"choose among {', '.join(CUTS)}")
    base = base or make_config({})
    nodes = base.nodes if nodes is None else nodes
    values = _base_values(base)
    n_blocks = _n_blocks(base)
    n_train = training_samples(base)
    if nodes > max_nodes(n_train, n_blocks):
        raise ConfigError("nodes", nodes, f"no plan of a model of {n_blocks} blocks on {n_train} training samples "
                                          f"uses more than {max_nodes(n_train, n_blocks)} nodes (every branch "
                                          f"needs a sample, every stage a block); use fewer nodes")
    candidates = _candidates(base, nodes, n_blocks, strategies, junctions, syncs, sync_every, cuts)
    if counted is not None:
        candidates = list(candidates)
        counted(len(candidates), nodes)
    plans, refused, seen = [], 0, set()
    for shape in candidates:
        try:
            plan = resolve(make_config({**values, **shape}))
        except ConfigError as exc:
            refused += 1
            if refusals is not None:
                refusals[refusal_reason(exc)] += 1
            continue
        key = plan_key(plan)
        if key not in seen:
            seen.add(key)
            plans.append(plan)
    return plans, refused


def refusal_reason(exc: ConfigError) -> str:
    """Why resolve refused a candidate, as a reason many candidates share: the key and the first clause of
    the message, numbers written ``N`` and parenthesised details ``…``, e.g. ``branches: junction=concat
    splits the N input rows into equal views``."""
    text = str(exc.allowed).split(";")[0]
    while True:  # innermost parentheses first, so that nested ones go too
        shorter = re.sub(r"\([^()]*\)", "\x00", text)
        if shorter == text:
            break
        text = shorter
    text = re.sub(r"\b\d+(\.\d+)?\b", "N", text).replace("\x00", "…")
    return f"{exc.key}: {' '.join(text.split()).removesuffix(' …')}"


def plan_key(plan: Plan) -> tuple:
    """What makes two plans the same plan: strategy, stages, junction, sync and schedule.

    One branch makes ``relay`` the same as ``none`` and ``concat`` the same as ``shared``.
    """
    one = len(plan.branches) == 1
    sync = "none" if one and plan.sync == "relay" else plan.sync
    junction = "shared" if one and plan.junction == "concat" else plan.junction
    stages = tuple(tuple((s.start, s.stop) for s in b.stages) for b in plan.branches)
    return (plan.strategy, stages,
            tuple((s.start, s.stop) for s in plan.trunk), plan.junction_at, junction, sync,
            plan.sync_every if sync == "fedavg" else 1, plan.aggregator is not None and sync != "none")


def period_rounds(plan: Plan) -> tuple[int, list[int]]:
    """The rounds to dry-run and, for every round of the run, the priced round it costs the same as.

    A round's events depend only on whether it syncs (``(round + 1) % sync_every == 0``) and, for an
    SL relay, on whether it is the first round (no hand-over before the first client). So rounds
    ``0 .. P-1`` (``P = sync_every``, plus one for a relay) cover every kind of round.

    Returns:
        ``(priced, source)``: rounds to price, and ``source[r]`` for ``r`` in ``range(config.rounds)``.
    """
    rounds = plan.config.rounds
    period = plan.sync_every if plan.sync == "fedavg" else 1
    first = 1 if plan.branch_order == "turns" else 0
    priced = min(rounds, first + period)
    source = [r if r < priced else first + (r - first) % period for r in range(rounds)]
    return priced, source


def price_ledger(plan: Plan, fast: bool = True, shapes: RoundShapes | None = None) -> pd.DataFrame:
    """The priced ledger of ``plan`` for ``config.rounds`` rounds, from one period of dry-run rounds.

    Row for row equal to ``dry_run(plan).ledger`` (see :func:`period_rounds`). With ``fast`` (see
    :func:`fplstudy.costs.dryrun.price_plan`) every kind of round is priced once anyway; ``fast=False`` prices
    the period's event stream with the reference (event by event) and repeats its rows. ``shapes``: the
    plan's :func:`fplstudy.costs.dryrun.round_shapes`, if the caller has them.
    """
    priced, source = period_rounds(plan)
    if priced == plan.config.rounds or (fast and fast_path_applies(plan)):
        return price_plan(plan, cached_shard_sizes(plan), check_profiles(plan), fast=fast, shapes=shapes)
    short = _with_rounds(plan, priced)
    ledger = price_plan(short, cached_shard_sizes(plan), check_profiles(plan), fast=fast)
    rows = ledger.groupby("round").indices
    index = np.concatenate([rows[s] for s in source])
    out = ledger.iloc[index].reset_index(drop=True)
    out["round"] = np.repeat(np.arange(len(source)), [len(rows[s]) for s in source])
    return out


def _with_rounds(plan: Plan, rounds: int) -> Plan:
    return replace(plan, config=plan.config.model_copy(update={"rounds": rounds}))


def price_candidate(plan: Plan, fast: bool = True) -> dict[str, Any]:
    """The cost totals of a plan (``dry_run(plan).totals`` plus ``bytes_per_round``), fast.

    Args:
        plan: the plan.
        fast: see :func:`price_ledger` (False: the reference pricing, for comparisons).

    Returns:
        :func:`fplstudy.costs.ledger.totals`'s dict with ``bytes_per_round`` added.
    """
    shapes = round_shapes(plan, cached_shard_sizes(plan)) if plan.site is not None else None  # for the network
    out = totals(plan, price_ledger(plan, fast, shapes))
    out["bytes_per_round"] = out["bytes_total"] / plan.config.rounds
    _add_network(out, plan, pair_bytes(shapes) if shapes is not None else {})
    return out


def pair_bytes(shapes: RoundShapes) -> dict[tuple[str, str], int]:
    """Payload bytes each ordered pair of plan nodes sends over the whole run, from a plan's round shapes."""
    per_kind: dict[tuple, dict[tuple[str, str], int]] = {}
    for kind, segments in shapes.items.items():
        sums: dict[tuple[str, str], int] = {}
        for _step, key in segments:
            for ev in shapes.events[key]:
                if isinstance(ev, Transfer):
                    sums[ev.src, ev.dst] = sums.get((ev.src, ev.dst), 0) + ev.nbytes
        per_kind[kind] = sums
    out: dict[tuple[str, str], int] = {}
    for kind in shapes.kinds:
        for pair, nbytes in per_kind[kind].items():
            out[pair] = out.get(pair, 0) + nbytes
    return out


def network_joules(plan: Plan, pairs: dict[tuple[str, str], int]) -> float:
    """Joules the points of ``plan``'s topology that host no plan node (sites, gateways left free) spend
    forwarding its messages: the ledger leaves them out (they are the network's), so a search that moved
    a plan node behind a free relay would look cheaper than it is. 0 without a topology."""
    site = plan.site
    if site is None:
        return 0.0
    point = {n.name: n.point for n in plan.nodes}
    hosted = set(point.values())
    total = 0.0
    for (src, dst), nbytes in sorted(pairs.items()):
        hops = site.path(point[src], point[dst])
        _, tx, rx = price_path(hops, nbytes)
        total += sum(tx[h.dst] + rx[h.dst] for h in hops[:-1] if h.dst not in hosted)
    return total


def _add_network(cost: dict[str, Any], plan: Plan, pairs: dict) -> None:
    cost["energy_j_network"] = network_joules(plan, pairs)
    cost["energy_j_site"] = cost["energy_j"] + cost["energy_j_network"]


_POOL: list = []  # (function, items) of the running _fork_map, read by its forked workers


def _pool_call(i: int):
    fn, items = _POOL
    return fn(items[i])


def _fork_map(fn, items: list, workers: int) -> list:
    """``[fn(x) for x in items]``, in ``workers`` forked processes when more than one (and fork exists);
    the first item is done here first, so the caches it fills (shards, block profiles) are shared."""
    import multiprocessing as mp

    if workers <= 1 or len(items) < 2 or "fork" not in mp.get_all_start_methods():
        return [fn(x) for x in items]
    global _POOL
    first = fn(items[0])
    _POOL = [fn, items]
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            rest = pool.map(_pool_call, range(1, len(items)), chunksize=max(1, len(items) // (8 * workers)))
    finally:
        _POOL = []
    return [first, *rest]


def price_all(plans: list[Plan], workers: int = 1) -> list[dict[str, Any]]:
    """:func:`price_candidate` every plan, in ``workers`` forked processes when more than one (and fork exists)."""
    return _fork_map(price_candidate, plans, workers)


def data_owners(plan: Plan) -> tuple[str, ...]:
    """The plan nodes that read the training data: each branch's first stage (a plan without a head, ``mp``:
    the first trunk stage). A placement search keeps them where the data is."""
    part = "branch" if plan.junction_at > 0 else "trunk"
    return tuple(n.name for n in plan.nodes if n.part == part and n.stage == 0)


def _hop_numbers(hops) -> tuple:
    return tuple((h.rate_bps, h.link.latency_s, h.link.tx_w, h.link.rx_w) for h in hops)


def _device_numbers(dev):
    return replace(dev, name="", description="")  # status and source take no part in comparisons


def interchangeable(site, profiles: Profiles) -> dict[str, str]:
    """Which topology nodes may swap the plan nodes they host without changing any price: each node's class
    (the name of its class's first node, in file order).

    Two nodes ``a``, ``b`` are interchangeable when their devices have the same numbers, neither lies inside
    the path between two other nodes (a relay's joules would follow the name), every path from ``a`` and
    from ``b`` to a third node has the same hops (rates, latencies, J/bit) through the same points, so has
    every path to them, and ``a -> b`` has the numbers of ``b -> a``. Swapping them maps a placement to one
    of the same ledger, so a search prices one placement per class of such swaps."""
    points = list(site.nodes)
    inside = {h.dst for a in points for b in points if a != b for h in (site.path(a, b) or ())[:-1]}
    dev = {p: _device_numbers(site.device(p, profiles)) for p in points}

    def route(a, b):
        hops = site.path(a, b)
        return None if hops is None else (_hop_numbers(hops), tuple(h.dst for h in hops[:-1]))

    def same(a, b) -> bool:
        if a in inside or b in inside or dev[a] != dev[b]:
            return False
        if route(a, b) is None or route(b, a) is None or route(a, b)[0] != route(b, a)[0]:
            return False
        return all(route(a, x) == route(b, x) and route(x, a) == route(x, b) for x in points if x not in (a, b))

    cls: dict[str, str] = {}
    for p in points:
        cls[p] = next((q for q in points[:points.index(p)] if cls[q] == q and same(q, p)), p)
    return cls


class _Choices:
    """Where each movable plan node of ``plan`` may go (:func:`placements`): the data owners' topology nodes
    are fixed; :meth:`options` gives, for a movable node and the topology nodes already taken, the free nodes
    that hold it (memory) and reach every taken one both ways, one per class of interchangeable nodes."""

    def __init__(self, plan: Plan, profiles: Profiles, twins: bool = True):
        site = plan.site
        if site is None:
            raise ConfigError("topology", None, "a placement search needs a topology; give topology: FILE")
        self.plan, owners = plan, data_owners(plan)
        self.fixed = {n.name: n.point for n in plan.nodes if n.name in owners}
        self.movable = [n.name for n in plan.nodes if n.name not in owners]
        self.points = list(site.nodes)
        self.need = {row[0]: row[-1] for row in memory_rows(plan)}
        self.room = {p: site.device(p, profiles).memory_bytes for p in self.points}
        self.cls = interchangeable(site, profiles) if twins else {p: p for p in self.points}
        self.reach = {(a, b): site.path(a, b) is not None for a in self.points for b in self.points}

    def fits(self, name: str, point: str, used) -> bool:
        room = self.room[point]
        return (room is None or self.need[name] <= room) and all(
            self.reach[point, q] and self.reach[q, point] for q in used)

    def options(self, name: str, used: list[str]) -> list[str]:
        out, tried = [], set()
        for point in self.points:
            if point in used or self.cls[point] in tried:
                continue
            tried.add(self.cls[point])  # the first unused node of its class stands for the class
            if self.fits(name, point, used):
                out.append(point)
        return out

    def owners_fit(self) -> bool:
        return all(self.fits(n, p, [q for q in self.fixed.values() if q != p]) for n, p in self.fixed.items())

    def ordered(self, where: dict[str, str]) -> dict[str, str]:
        return {n.name: where[n.name] for n in self.plan.nodes}

    def every(self) -> Iterator[dict[str, str]]:
        """Every placement, in a fixed order (:func:`placements`)."""

        def walk(i: int, where: dict[str, str], used: list[str]) -> Iterator[dict[str, str]]:
            if i == len(self.movable):
                yield self.ordered(where)
                return
            name = self.movable[i]
            for point in self.options(name, used):
                where[name] = point
                yield from walk(i + 1, where, used + [point])
                del where[name]

        if self.owners_fit():
            yield from walk(0, dict(self.fixed), list(self.fixed.values()))


def placements(plan: Plan, profiles: Profiles | None = None, twins: bool = True) -> Iterator[dict[str, str]]:
    """Every placement of ``plan``'s nodes on its topology that a search prices, in a fixed order.

    The data owners (:func:`data_owners`) stay on the topology nodes ``plan`` has them on (where its config's
    ``placement`` or the default rule put them: where the data is); every other plan node (branch stages
    after the first, trunk stages, a dedicated aggregator) goes, in plan order, to any free topology node
    that can hold it (its peak memory, :func:`fplstudy.costs.memory.memory_rows`, within the device's
    ``memory_bytes`` where the device gives one) and reaches every node placed before it both ways. One
    topology node hosts one plan node. With ``twins``, of interchangeable free nodes (:func:`interchangeable`)
    only the first unused one is tried, so each placement stands for every placement its swaps give.

    Yields:
        ``{plan node: topology node}`` for every plan node.
    """
    yield from _Choices(plan, profiles or check_profiles(plan), twins).every()


def _sampled_placements(plan: Plan, profiles: Profiles, limit: int, seed: int) -> tuple[list[dict], bool]:
    """At most ``limit`` placements of :func:`placements`: all of them when there are no more (and True),
    else the plan's own placement and a seeded sample of distinct others (and False), drawn by random walks
    down the same choices (:class:`_Choices`)."""
    space = _Choices(plan, profiles)  # memory, reach and classes worked out once for the walk and the sample
    every = []
    for where in space.every():
        every.append(where)
        if len(every) > limit:
            break
    if len(every) <= limit:
        return every, True
    rng = random.Random(f"{plan_key(plan)}:{seed}")
    own = {n.name: n.point for n in plan.nodes}
    chosen = {tuple(own.items()): own}
    for _ in range(50 * limit):
        if len(chosen) >= limit:
            break
        where = dict(space.fixed)
        for name in space.movable:
            options = space.options(name, list(where.values()))
            if not options:
                break
            where[name] = rng.choice(options)
        else:
            ordered = space.ordered(where)
            chosen.setdefault(tuple(ordered.items()), ordered)
    return list(chosen.values()), False


def placed(plan: Plan, where: dict[str, str]) -> Plan:
    """``plan`` with its nodes on the topology nodes ``where`` names (config key ``placement`` set to it):
    the plan :func:`fplstudy.plans.plan.resolve` gives for that config, without resolving it again."""
    site = plan.site
    nodes = tuple(replace(n, device=site.device_name(where[n.name]), point=where[n.name]) for n in plan.nodes)
    return replace(plan, config=plan.config.model_copy(update={"placement": dict(where)}), nodes=nodes)


def price_placements(plan: Plan, wheres: list[dict[str, str]]) -> list[dict[str, Any]]:
    """:func:`price_candidate` of ``placed(plan, where)`` for every placement, fast: the round programs and events
    (:func:`fplstudy.costs.dryrun.round_shapes`), the memory and the model size are the same for every placement
    and computed once; each placement is templated, scheduled and summed on arrays
    (:meth:`fplstudy.costs.ledger.Pricer.totals`), with no ledger DataFrame. Equal to :func:`price_candidate` to 1e-12."""
    profiles = check_profiles(plan)
    shapes = round_shapes(plan, cached_shard_sizes(plan))
    pairs, fixed = pair_bytes(shapes), plan_totals(plan)
    out = []
    for where in wheres:
        p = placed(plan, where)
        pricer = Pricer(p, profiles)
        rounds = price_rounds(pricer, shapes) if pricer.applies else None
        if rounds is None:
            out.append(price_candidate(p))
            continue
        cost = {**pricer.totals(rounds), **fixed}
        cost["bytes_per_round"] = cost["bytes_total"] / p.config.rounds
        _add_network(cost, p, pairs)
        out.append(cost)
    return out


def memory_fits(plan: Plan, profiles: Profiles | None = None) -> bool:
    """Whether every node's peak memory fits its device's ``memory_bytes`` (:func:`fplstudy.costs.memory.misfits`;
    a device without one: assumed to fit)."""
    return not misfits(plan, profiles or check_profiles(plan))


def _price_job(job: tuple[Plan, list[dict[str, str]]]) -> list[dict[str, Any]]:
    return price_placements(*job)


def price_all_placements(jobs: list[tuple[Plan, list[dict[str, str]]]], workers: int = 1) -> list[list[dict]]:
    """:func:`price_placements` of every ``(plan, placements)`` job, in ``workers`` forked processes when
    more than one (and fork exists)."""
    return _fork_map(_price_job, jobs, workers)


def plan_name(plan: Plan) -> str:
    """A readable, unique name of a plan's shape, e.g. ``fpl-2x1+2-j2-adapter-fedavg1-b-t4`` (each
    strategy's :attr:`fplstudy.plans.strategies.Strategy.plan_name`)."""
    return strategy(plan.strategy).plan_name(plan)


_CUTS = r"(?:\d+(?:-\d+)*)?"
# How plan_name spells each strategy's plans (fplstudy.plans.strategies' plan_name functions), as a pattern
# whose groups are PLAN_COLUMNS, and in words: NAME_LEGEND. tests/unit/costs/test_search.py decodes every
# name of a search with them and compares the groups with the plan's columns.
NAME_PATTERNS = {
    "centralized": r"centralized-(?P<nodes>\d+)",
    "fl": r"fl-(?P<nodes>\d+)-every(?P<sync_every>\d+)",
    "mp": rf"mp-(?P<nodes>\d+)-t(?P<trunk_cuts>{_CUTS})",
    "sl": r"sl-(?P<nodes>\d+)-j(?P<junction_at>\d+)",
    "sfl": r"sfl-(?P<nodes>\d+)-j(?P<junction_at>\d+)-every(?P<sync_every>\d+)",
    "fpl": (rf"fpl-(?P<branches>\d+)x(?P<branch_stages>\d+)\+(?P<trunk_stages>\d+)-j(?P<junction_at>\d+)"
            rf"-(?P<junction>{'|'.join(JUNCTIONS)})-(?P<sync>none|relay|fedavg)(?P<sync_every>\d*)"
            rf"-b(?P<branch_cuts>{_CUTS})-t(?P<trunk_cuts>{_CUTS})"),
}
_JN = "jJ: the junction (the cut) after the first J blocks of the model"
_CUT_WORDS = "the blocks (counted from 0) where the 2nd, 3rd, ... stage of {} start; empty: one stage"
NAME_LEGEND = {
    "centralized": "centralized-N: the whole model and all the data on one node",
    "fl": "fl-N-everyK: N clients, each training the whole model, averaged by an aggregator every K rounds",
    "mp": "mp-N-tC-C...: the whole model in a chain of N nodes; t: " + _CUT_WORDS.format("the chain"),
    "sl": f"sl-N-jJ: N - 1 clients holding the head take turns through one server holding the rest; {_JN}",
    "sfl": f"sfl-N-jJ-everyK: N - 1 clients holding the head, one server holding the rest; {_JN}; the clients' "
           f"heads averaged every K rounds",
    "fpl": (f"fpl-BxS+T-jJ-JUNCTION-SYNC-bC...-tC...: B branches of S stages each (a node a stage, each branch "
            f"trained on its own data) joined into a trunk of T stages; {_JN}; JUNCTION: how the branches meet "
            f"the trunk (shared: the same layers, adapter: a learnable adapter per branch, concat: each branch "
            f"sees a slice of the input); SYNC: none (branches never averaged), fedavgK (averaged every K "
            f"rounds) or relay (branches take turns); b, t: " + _CUT_WORDS.format("a branch (b), the trunk (t)")),
}
PLACEMENT_LEGEND = "@P0,P1,...: the topology nodes that host plan nodes n0, n1, ... (a placement search)"


def decode_name(name: str) -> dict[str, str]:
    """The parts of a plan name (:func:`plan_name`, with a placement search's ``@…``): ``strategy``, the
    :data:`NAME_PATTERNS` groups of its strategy (cuts as written, ``3-5``) and ``placement`` when it has one.

    Raises:
        ValueError: a name no strategy spells so.
    """
    shape, at, where = name.partition("@")
    for s, pattern in NAME_PATTERNS.items():
        found = re.fullmatch(pattern, shape)
        if found:
            return {"strategy": s, **found.groupdict(), **({"placement": where} if at else {})}
    raise ValueError(f"{name!r} is not a plan name of fplstudy explore")


def name_legend(names: Iterable[str]) -> list[str]:
    """What the parts of these plan names mean: one line of :data:`NAME_LEGEND` for each strategy among them,
    in the order they first appear, and :data:`PLACEMENT_LEGEND` if one has a placement."""
    names = list(names)
    lines = [NAME_LEGEND.get(s, f"{s}-...: named by strategy {s}'s plan_name (fplstudy.plans.strategies)")
             for s in dict.fromkeys(_strategy_of(n) for n in names)]
    return lines + ([PLACEMENT_LEGEND] if any("@" in n for n in names) else [])


def _strategy_of(name: str) -> str:
    try:
        return decode_name(name)["strategy"]
    except ValueError:  # a strategy registered outside NAME_PATTERNS
        return name.split("-")[0]


def plan_row(plan: Plan) -> dict[str, Any]:
    """The shape columns (:data:`PLAN_COLUMNS`) and the config overrides of one plan."""
    cfg = plan.config
    stages = plan.branches[0].stages
    return {
        "name": plan_name(plan), "strategy": plan.strategy, "nodes": cfg.nodes, "nodes_used": len(plan.nodes),
        "branches": len(plan.branches), "branch_stages": len(stages), "trunk_stages": len(plan.trunk),
        "junction": plan.junction, "junction_at": plan.junction_at,
        "branch_cuts": " ".join(str(s.start) for s in stages[1:]),
        "trunk_cuts": " ".join(str(s.start) for s in plan.trunk[1:]),
        "sync": plan.sync, "sync_every": plan.sync_every,
        "placement": " ".join(f"{n.name}={n.point}" for n in plan.nodes if n.point),
        "overrides": {"strategy": plan.strategy, "nodes": cfg.nodes, **cfg.model_dump(exclude_defaults=True)},
    }


def pareto_front(table: pd.DataFrame, objectives: Iterable[str] = OBJECTIVES, maximize: Iterable[str] = ()
                 ) -> np.ndarray:
    """Which rows are non-dominated when every objective is minimised (those of ``maximize`` maximised).

    A row is dominated when another row is no worse on every objective and better on at least one;
    rows with equal objectives do not dominate each other (all are kept). The plan search and the
    study's figures (accuracy against a cost) both draw their fronts with it.

    Returns:
        Boolean mask, one entry per row of ``table``.
    """
    objectives, maximize = list(objectives), set(maximize)
    sign = np.array([-1.0 if o in maximize else 1.0 for o in objectives])
    values = table[objectives].to_numpy(dtype=float) * sign
    keep = np.ones(len(values), dtype=bool)
    for i, row in enumerate(values):
        no_worse = (values <= row).all(axis=1)
        better = (values < row).any(axis=1)
        if (no_worse & better).any():
            keep[i] = False
    return keep


def explore(base: Config | dict | None = None, nodes: int | None = None, *,
            strategies: Iterable[str] = STRATEGIES, junctions: Iterable[str] = JUNCTIONS,
            syncs: Iterable[str] = FPL_SYNCS, sync_every: Iterable[int] = (1,), cuts: str = "all",
            objectives: Iterable[str] = OBJECTIVES, budget_energy_j_per_node: float | None = None,
            budget_bytes_per_round: float | None = None, workers: int = 1, search_placement: bool = False,
            max_placements: int = MAX_PLACEMENTS, log: Callable[[str], None] | None = None) -> Exploration:
    """Enumerate, price and rank every valid plan; see the module docstring.

    Args:
        base: fixed part of the plan (a Config or a dict of keys); None = defaults.
        nodes: edge nodes; None = ``base.nodes``.
        strategies, junctions, syncs, sync_every, cuts: the axes (see :func:`enumerate_plans`).
        objectives: cost columns to minimise (any of :data:`COST_COLUMNS`).
        budget_energy_j_per_node: keep plans whose busiest node spends at most this many joules over
            the run's ``rounds`` (``energy_j_max_node``); None = no budget.
        budget_bytes_per_round: keep plans that move at most this many payload bytes per round.
        workers: processes that price plans in parallel (fork; 1 = in this process).
        search_placement: also search which topology node hosts which plan node (the base config needs
            ``topology``): every plan shape is priced on each of its :func:`placements`, at most
            ``max_placements`` of them (more: the shape's own placement and a seeded sample, column
            ``placements_exhaustive`` False); each row is one placement (its name ends ``@`` and the
            topology nodes of ``n0, n1, …``; ``overrides`` include ``placement``).
        max_placements: the bound on placements priced per plan shape (1 .. 10**6).
        log: called with a line before the search (the candidates) and once the first plan is priced (the time
            the search will take at that plan's rate), so that a search of minutes says so at once; None: silent.

    Returns:
        An :class:`Exploration`.

    Raises:
        ConfigError: a bad base config, an unknown objective, a placement search without a topology or
            a bad ``max_placements``.
    """
    t0 = time.perf_counter()
    if not isinstance(base, Config):
        base = make_config(base or {})
    objectives = tuple(objectives)
    for o in objectives:
        if o not in COST_COLUMNS:
            raise ConfigError("objectives", o, f"choose among {', '.join(COST_COLUMNS)}")
    if base.round_deadline_s is not None:
        raise ConfigError("round_deadline_s", base.round_deadline_s, "explore prices plans without a round deadline "
                          "(which branches are late is settled per run): leave it out, or price one plan with "
                          "fplstudy cost")
    if search_placement and base.topology is None:
        raise ConfigError("search_placement", True, "searches placements on a topology; give the base config "
                                                    "topology: FILE (or a shipped name: fog_wifi, …)")
    if not isinstance(max_placements, int) or isinstance(max_placements, bool) or not 1 <= max_placements <= 10**6:
        raise ConfigError("max_placements", max_placements, "a whole number from 1 to 1000000")
    if search_placement and base.placement:
        raise ConfigError("placement", base.placement, "the placement search places every node itself; drop "
                                                       "placement from the base config")
    tried: list[int] = []

    def counted(count: int, n: int) -> None:
        tried.append(count)
        if log is not None:
            log(f"explore: {count} candidate plans for {n} nodes (cuts {cuts}"
                + (f", up to {max_placements} placements each" if search_placement else "") + "): resolving them, "
                f"then pricing each valid one with {workers} worker{'s' if workers > 1 else ''}")

    refusals: Counter = Counter()
    plans, refused = enumerate_plans(base, nodes, strategies=strategies, junctions=junctions, syncs=syncs,
                                     sync_every=sync_every, cuts=cuts, counted=counted, refusals=refusals)
    extra = ["memory_fits"]
    if search_placement:
        rows = _search_rows(plans, max_placements, base.seed, workers)
        extra.append("placements_exhaustive")
    else:
        said = (f"{len(plans)} valid plans ({refused} refused, {tried[0] - refused - len(plans)} repeats), "
                f"resolved in {time.perf_counter() - t0:.0f} s")
        costs = _price_timed(plans, workers, log, said) if log is not None else price_all(plans, workers)
        rows = [{**plan_row(plan), **{c: cost[c] for c in COST_COLUMNS}, "memory_fits": memory_fits(plan)}
                for plan, cost in zip(plans, costs)]
    table = pd.DataFrame(rows, columns=[*PLAN_COLUMNS, *COST_COLUMNS, *extra, "overrides"])
    within = table["memory_fits"].to_numpy(dtype=bool).copy()
    if budget_energy_j_per_node is not None:
        within &= (table["energy_j_max_node"] <= budget_energy_j_per_node).to_numpy()
    if budget_bytes_per_round is not None:
        within &= (table["bytes_per_round"] <= budget_bytes_per_round).to_numpy()
    table["within_budget"] = within
    on_front = np.zeros(len(table), dtype=bool)
    if within.any():
        on_front[np.flatnonzero(within)] = pareto_front(table[within], objectives)
    table["on_front"] = on_front
    front = table[on_front].sort_values(list(objectives)).reset_index(drop=True)
    return Exploration(table, front, objectives, time.perf_counter() - t0, refused,
                       dict(refusals.most_common()), tried[0] - refused - len(plans))


SAMPLE_PLANS = 20  # plans priced one by one for explore's time estimate, at most ...
SAMPLE_S = 2.0  # ... and for about this many seconds


def _price_timed(plans: list[Plan], workers: int, log: Callable[[str], None], said: str) -> list[dict[str, Any]]:
    """:func:`price_all` of ``plans``, logging how long it will take before the bulk of the work. The first plan
    pays for what later plans reuse (the FLOP profile, the shard sizes, the data's shape), and so, less, does
    the first plan of each new shape; the rate is the median seconds of a sample of up to :data:`SAMPLE_PLANS`
    others spread over the list (strategies and shapes in their share), priced one by one; the rest are
    priced as :func:`price_all` does."""
    if not plans:
        log(f"explore: {said}; nothing to price")
        return []
    t0 = time.perf_counter()
    done = {0: price_candidate(plans[0])}
    first_s = time.perf_counter() - t0
    seconds = []
    for i in dict.fromkeys(np.linspace(1, len(plans) - 1, min(SAMPLE_PLANS, len(plans) - 1)).round().astype(int)):
        t1 = time.perf_counter()
        done[int(i)] = price_candidate(plans[int(i)])
        seconds.append(time.perf_counter() - t1)
        if sum(seconds) > SAMPLE_S:
            break
    each = float(np.median(seconds)) if seconds else first_s
    rest = [i for i in range(len(plans)) if i not in done]
    spent = time.perf_counter() - t0
    log(f"explore: {said}; the first priced in {first_s:.2g} s (with one-time work: FLOP profile, shard sizes)"
        + (f", {len(seconds)} more in {sum(seconds):.2g} s" if seconds else "")
        + f": about {spent + each * len(rest) / workers:.0f} s for all")
    done.update(zip(rest, price_all([plans[i] for i in rest], workers)))
    return [done[i] for i in range(len(plans))]


def _search_rows(plans: list[Plan], limit: int, seed: int, workers: int) -> list[dict[str, Any]]:
    """The table rows of a placement search: every shape on each of its (bounded) placements."""
    jobs, exhaustive = [], []
    for plan in plans:
        wheres, every = _sampled_placements(plan, check_profiles(plan), limit, seed)
        jobs.append((plan, wheres))
        exhaustive.append(every)
    rows = []
    for (plan, wheres), every, costs in zip(jobs, exhaustive, price_all_placements(jobs, workers)):
        shape = plan_name(plan)
        for where, cost in zip(wheres, costs):
            row = plan_row(placed(plan, where))
            row["name"] = f"{shape}@{','.join(where[n.name] for n in plan.nodes)}"
            rows.append({**row, **{c: cost[c] for c in COST_COLUMNS}, "memory_fits": True,
                         "placements_exhaustive": every})
    return rows


def _csv(rows: pd.DataFrame, drop: list[str]) -> pd.DataFrame:
    out = rows.drop(columns=["overrides", *drop]).copy()
    out["set"] = [plan_set(o) for o in rows["overrides"]]
    return out


def plan_set(overrides: dict[str, Any]) -> str:
    """The ``set`` column of a plan: its config keys as ``KEY=VALUE`` pairs, strategy and nodes first, one
    space between pairs; each pair is one ``--set`` of ``fplstudy run`` (:func:`set_pairs`), and together they
    make the config of exactly that plan (with no config file: the base config's keys are among them)."""
    return " ".join(f"{k}={_set_value(v)}" for k, v in overrides.items())


def set_pairs(text: str) -> list[str]:
    """The ``--set`` arguments of a ``set`` column (:func:`plan_set`): ``load_config(None, set_pairs(text))``
    is the plan's config."""
    return text.split()


def front_csv(result: Exploration) -> pd.DataFrame:
    """The front as written by ``fplstudy explore --out``: shape and cost columns, plus ``set`` (the
    ``--set`` arguments that rebuild each plan: ``fplstudy run --set …`` trains it)."""
    return _csv(result.front, ["within_budget", "on_front"])


def plans_csv(result: Exploration) -> pd.DataFrame:
    """Every priced plan (``fplstudy explore --all-out``), with ``within_budget``, ``on_front`` and ``set``."""
    return _csv(result.plans, [])


def _set_value(value: Any) -> str:
    """A config value as ``--set`` reads it back (YAML): plain where that reads as the same value, else JSON
    (a flow list or mapping, a quoted string), which YAML reads as written. Never a space, so that the pairs
    of a ``set`` column split on spaces: a space inside a string is written ``\\u0020``, a YAML escape."""
    text = str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    try:
        read = parse_yaml(text) if text and not any(c.isspace() for c in text) else None
        same = text != "" and read == value and type(read) is type(value)
    except YamlError:
        same = False
    return text if same else json.dumps(value, separators=(",", ":")).replace(" ", "\\u0020")
