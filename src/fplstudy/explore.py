"""Search over plans: enumerate every valid plan for a model and node count, price each, keep the front.

:func:`enumerate_plans` lists the configs of every plan shape that fits ``nodes`` edge nodes (strategy,
branches D, branch stages S_b, trunk stages S_t, junction index and mode, every placement of the cuts,
sync policy and period), keeping only those that :func:`fplstudy.plan.resolve` accepts. :func:`price`
prices one plan with the dry run; :func:`explore` prices them all and returns a table with the
:func:`pareto_front` on the chosen objectives (default: total energy, bytes, makespan and the largest
per-node memory), after optional budgets (joules per node, bytes per round).

Speed: costs of a round depend only on the plan and on whether the round syncs, so :func:`price`
dry-runs one period of rounds (``sync_every`` rounds, one more for an SL relay whose first round has
no hand-over) and repeats its ledger rows over ``config.rounds`` rounds before summing them with
:func:`fplstudy.ledger.totals`. The totals equal those of ``dry_run(config)`` exactly
(tests/test_explore.py checks it). Shard sizes are partitioned once per number of branches
(:func:`fplstudy.dryrun.cached_shard_sizes`).

Which nodes count: ``nodes`` is read as each strategy reads it (see :mod:`fplstudy.strategies`); ``fl``
adds its aggregator, so the ``nodes_used`` column may be ``nodes + 1``; ``centralized`` only fits
``nodes=1``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd

from fplstudy.config import JUNCTIONS, Config, ConfigError, make_config
from fplstudy.dryrun import cached_shard_sizes, price_plan
from fplstudy.ledger import totals
from fplstudy.makespan import fast_path_applies
from fplstudy.plan import Plan, max_nodes, resolve, training_samples
from fplstudy.profiles import check_profiles
from fplstudy.strategies import CUTS, STRATEGIES, Axes, strategy

OBJECTIVES = ("energy_j", "bytes_total", "makespan_s", "memory_bytes_max_node")
FPL_SYNCS = ("none", "fedavg", "relay")
# config keys that describe the plan's shape; explore sets them, a base config must leave them out
SHAPE_KEYS = ("strategy", "nodes", "branches", "branch_stages", "trunk_stages", "junction", "junction_at",
              "branch_cuts", "trunk_cuts", "cut_by", "sync", "sync_every")
PLAN_COLUMNS = ("name", "strategy", "nodes", "nodes_used", "branches", "branch_stages", "trunk_stages",
                "junction", "junction_at", "branch_cuts", "trunk_cuts", "sync", "sync_every")
COST_COLUMNS = ("flops_total", "bytes_total", "bytes_per_round", "energy_j", "energy_j_max_node",
                "makespan_s", "memory_bytes_max_node", "model_params", "model_params_ratio")


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
    """

    plans: pd.DataFrame
    front: pd.DataFrame
    objectives: tuple[str, ...]
    seconds: float
    refused: int

    def configs(self, front_only: bool = True) -> list[Config]:
        """The configs of the front's plans (or of every plan), ready for ``fplstudy.runner.run``."""
        rows = self.front if front_only else self.plans
        return [make_config(o) for o in rows["overrides"]]


def _n_blocks(base: Config) -> int:
    from fplstudy.datasets import DATASET_META
    from fplstudy.flops import profile_model
    from fplstudy.models import DATASET_DEFAULT_MODEL

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
    :attr:`fplstudy.strategies.Strategy.candidates`, in the order of ``strategies``."""
    axes = Axes(nodes, n_blocks, tuple(junctions), tuple(syncs), tuple(sync_every), cuts,
                features=base.partition == "features")
    for s in strategies:
        yield from strategy(s, key="strategies").candidates(axes)


def enumerate_plans(base: Config | None = None, nodes: int | None = None, *,
                    strategies: Iterable[str] = STRATEGIES, junctions: Iterable[str] = JUNCTIONS,
                    syncs: Iterable[str] = FPL_SYNCS, sync_every: Iterable[int] = (1,), cuts: str = "all",
                    ) -> tuple[list[Plan], int]:
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
    plans, refused, seen = [], 0, set()
    for shape in _candidates(base, nodes, n_blocks, strategies, junctions, syncs, sync_every, cuts):
        try:
            plan = resolve(make_config({**values, **shape}))
        except ConfigError:
            refused += 1
            continue
        key = plan_key(plan)
        if key not in seen:
            seen.add(key)
            plans.append(plan)
    return plans, refused


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
    first = 1 if plan.schedule == "turns" else 0
    priced = min(rounds, first + period)
    source = [r if r < priced else first + (r - first) % period for r in range(rounds)]
    return priced, source


def price_ledger(plan: Plan, fast: bool = True) -> pd.DataFrame:
    """The priced ledger of ``plan`` for ``config.rounds`` rounds, from one period of dry-run rounds.

    Row for row equal to ``dry_run(plan).ledger`` (see :func:`period_rounds`). With ``fast`` (see
    :func:`fplstudy.dryrun.price_plan`) every kind of round is priced once anyway; ``fast=False`` prices
    the period's event stream with the reference (event by event) and repeats its rows.
    """
    priced, source = period_rounds(plan)
    if priced == plan.config.rounds or (fast and fast_path_applies(plan)):
        return price_plan(plan, cached_shard_sizes(plan), check_profiles(plan), fast=fast)
    short = _with_rounds(plan, priced)
    ledger = price_plan(short, cached_shard_sizes(plan), check_profiles(plan), fast=fast)
    rows = ledger.groupby("round").indices
    index = np.concatenate([rows[s] for s in source])
    out = ledger.iloc[index].reset_index(drop=True)
    out["round"] = np.repeat(np.arange(len(source)), [len(rows[s]) for s in source])
    return out


def _with_rounds(plan: Plan, rounds: int) -> Plan:
    from dataclasses import replace

    return replace(plan, config=plan.config.model_copy(update={"rounds": rounds}))


def price(plan: Plan, fast: bool = True) -> dict[str, Any]:
    """The cost totals of a plan (``dry_run(plan).totals`` plus ``bytes_per_round``), fast.

    Args:
        plan: the plan.
        fast: see :func:`price_ledger` (False: the reference pricing, for comparisons).

    Returns:
        :func:`fplstudy.ledger.totals`'s dict with ``bytes_per_round`` added.
    """
    out = totals(plan, price_ledger(plan, fast))
    out["bytes_per_round"] = out["bytes_total"] / plan.config.rounds
    return out


_POOL_PLANS: list[Plan] = []


def _price_index(i: int) -> dict[str, Any]:
    return price(_POOL_PLANS[i])


def price_all(plans: list[Plan], workers: int = 1) -> list[dict[str, Any]]:
    """:func:`price` every plan, in ``workers`` forked processes when more than one (and fork exists)."""
    import multiprocessing as mp

    if workers <= 1 or len(plans) < 2 or "fork" not in mp.get_all_start_methods():
        return [price(p) for p in plans]
    global _POOL_PLANS
    price(plans[0])  # warm the caches (shards, block profiles) once, before the fork
    _POOL_PLANS = plans
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            return pool.map(_price_index, range(len(plans)), chunksize=max(1, len(plans) // (8 * workers)))
    finally:
        _POOL_PLANS = []


def plan_name(plan: Plan) -> str:
    """A readable, unique name of a plan's shape, e.g. ``fpl-2x1+2-j2-adapter-fedavg1-b-t4`` (each
    strategy's :attr:`fplstudy.strategies.Strategy.plan_name`)."""
    return strategy(plan.strategy).plan_name(plan)


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
        "overrides": cfg.model_dump(exclude_defaults=True),
    }


def pareto_front(table: pd.DataFrame, objectives: Iterable[str] = OBJECTIVES) -> np.ndarray:
    """Which rows are non-dominated when every objective is minimised.

    A row is dominated when another row is no worse on every objective and better on at least one;
    rows with equal objectives do not dominate each other (all are kept).

    Returns:
        Boolean mask, one entry per row of ``table``.
    """
    values = table[list(objectives)].to_numpy(dtype=float)
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
            budget_bytes_per_round: float | None = None, workers: int = 1) -> Exploration:
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

    Returns:
        An :class:`Exploration`.

    Raises:
        ConfigError: a bad base config or an unknown objective.
    """
    t0 = time.perf_counter()
    if not isinstance(base, Config):
        base = make_config(base or {})
    objectives = tuple(objectives)
    for o in objectives:
        if o not in COST_COLUMNS:
            raise ConfigError("objectives", o, f"choose among {', '.join(COST_COLUMNS)}")
    plans, refused = enumerate_plans(base, nodes, strategies=strategies, junctions=junctions, syncs=syncs,
                                     sync_every=sync_every, cuts=cuts)
    costs = price_all(plans, workers)
    rows = [{**plan_row(plan), **{c: cost[c] for c in COST_COLUMNS}} for plan, cost in zip(plans, costs)]
    table = pd.DataFrame(rows, columns=[*PLAN_COLUMNS, *COST_COLUMNS, "overrides"])
    within = np.ones(len(table), dtype=bool)
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
    return Exploration(table, front, objectives, time.perf_counter() - t0, refused)


def _csv(rows: pd.DataFrame, drop: list[str]) -> pd.DataFrame:
    out = rows.drop(columns=["overrides", *drop]).copy()
    out["set"] = [" ".join(f"{k}={_yaml_value(v)}" for k, v in o.items()) for o in rows["overrides"]]
    return out


def front_csv(result: Exploration) -> pd.DataFrame:
    """The front as written by ``fplstudy explore --out``: shape and cost columns, plus ``set`` (the
    ``--set`` arguments that rebuild each plan: ``fplstudy run --set …`` trains it)."""
    return _csv(result.front, ["within_budget", "on_front"])


def plans_csv(result: Exploration) -> pd.DataFrame:
    """Every priced plan (``fplstudy explore --all-out``), with ``within_budget``, ``on_front`` and ``set``."""
    return _csv(result.plans, [])


def _yaml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)
