"""The named strategies: one registry of every strategy-level fact (see DESIGN.md, "Named strategies").

Each :class:`Strategy` of :data:`REGISTRY` holds, in one place, what the rest of fplstudy knows about a
strategy by its name: its **preset** (how the user's ``nodes``, ``branches``, ``junction`` … become the
plan's :class:`Shape`), the **candidates** :mod:`fplstudy.costs.search` enumerates for it, its **plan name**
in a search, a searched plan in a sentence, and its labels and place in the tables' and legends' order.
:data:`STRATEGIES` lists the names; :func:`strategy` looks one up. How a strategy is drawn and taught
(title, short name, teaching text, colour, marker) lives in :mod:`fplstudy.views.looks`, outside the
training code, so that a colour or a sentence never changes the code hash of a run. A strategy that fits
the plan's shape is added here and in ``views/looks.py`` (tests/unit/views/test_style.py names a missing
look): a preset never adds a code path, every strategy runs through the same engine.

How ``nodes`` is read:

- ``centralized`` — one node holds the whole model and all the data (nodes must be 1).
- ``fl`` — nodes are the clients, each a one-stage branch holding the whole model; a dedicated
  aggregator node averages them (FedAvg).
- ``mp`` — nodes are the stages of the whole model (one branch with no blocks of its own; the first
  stage holder owns the data, the last computes the loss).
- ``sl`` / ``sfl`` — one server holding the tail (the trunk) and nodes − 1 clients holding a head
  each; ``sl`` relays head weights client to client through the server, clients in turn;
  ``sfl`` averages the heads every round.
- ``fpl`` — nodes = branches × branch_stages + trunk_stages; ``trunk_stages`` defaults to the nodes
  left over, ``branches`` to half the nodes (divided by ``branch_stages``); junction ``adapter``.

The strategy's name is checked here, where the plan is resolved (:func:`preset`, called by
:func:`fplstudy.plans.plan.resolve`): :mod:`fplstudy.config` holds the keys and their types only, and this
module reads it (never the other way round).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fplstudy.config import JUNCTIONS, Config, ConfigError

# A resolved plan (fplstudy.plans.plan.Plan) as the plan-name functions take it: plan imports this module, so
# this module names the type without importing it (no import cycle, not even for type checkers).
ResolvedPlan = Any


@dataclass(frozen=True)
class Shape:
    """The shape a preset gives a plan.

    Attributes:
        branches: D.
        branch_stages: S_b (0 when the branch holds no blocks, as in ``mp``).
        trunk_stages: S_t (0 when there is no trunk).
        junction_at: blocks below the junction.
        junction: junction mode.
        sync: sync policy.
        dedicated_aggregator: whether an extra node (beyond ``nodes``) aggregates.
    """

    branches: int
    branch_stages: int
    trunk_stages: int
    junction_at: int
    junction: str
    sync: str
    dedicated_aggregator: bool

    @property
    def cuts_a_head(self) -> bool:
        """Whether the junction cuts the model into a head (branch stages) and a trunk, both non-empty
        (``sl``, ``sfl``, ``fpl``); ``junction_at`` must then lie in ``1 .. n_blocks - 1``."""
        return self.branch_stages > 0 and self.trunk_stages > 0


@dataclass(frozen=True)
class Axes:
    """What :mod:`fplstudy.costs.search` varies, handed to each strategy's ``candidates``.

    Attributes:
        nodes: edge nodes.
        n_blocks: blocks of the model.
        junctions: junction modes to try (where a strategy has a junction layer).
        syncs: sync policies to try (where a strategy lets the user choose).
        periods: sync periods (rounds) for FedAvg plans.
        cuts: ``all`` (every placement of the stage cuts) or ``balanced`` (cuts left to resolve).
        features: the base config partitions by features (only the ``concat`` junction fits).
    """

    nodes: int
    n_blocks: int
    junctions: tuple[str, ...]
    syncs: tuple[str, ...]
    periods: tuple[int, ...]
    cuts: str
    features: bool


@dataclass(frozen=True)
class Strategy:
    """Every fact about one named strategy (see the module docstring).

    Attributes:
        name: the ``strategy`` config value.
        legend: place in every legend and in the study's label columns (``curves.csv``), 0 first.
        shape: the preset: ``shape(cfg, n_blocks, default_junction)`` → :class:`Shape`; raises
            ConfigError when the config does not fit (the shared checks are in :func:`preset`).
        candidates: ``candidates(axes)`` → the plan-shape overrides explore tries (resolve may refuse some).
        plan_name: ``plan_name(plan)`` → a readable, unique name of a plan's shape in a search.
        describe: ``describe(row)`` → a searched plan (a row of explore's table) in one sentence.
        fewer_branches: ``fewer_branches(cfg, n_train)`` → ``(key, value, fix)``: which key to lower,
            and how, when the plan has more branches than training samples.
        junctions: the junction modes the strategy allows (the first is its default).
        label_junctions: the junctions whose plans the tables and figures tell apart (label
            ``<name>-<junction>``, in this order); empty: one label, the name.
        fixed_nodes: the node count the strategy always runs on (``centralized``: 1), else None.
        client_server: its branches are clients and a one-node trunk is the server (``sl``, ``sfl``).
        trains_as: the strategy it learns exactly like (same updates, same curves), else None.
        ships_activations: its nodes exchange activations and their gradients at a cut (``mp``, ``sl``,
            ``sfl``, ``fpl``), not only parameters (``fl``) or nothing (``centralized``).
    """

    name: str
    legend: int
    shape: Callable[[Config, int, int], Shape]
    candidates: Callable[[Axes], Iterator[dict[str, Any]]]
    plan_name: Callable[[ResolvedPlan], str]
    describe: Callable[[Mapping[str, Any]], str]
    fewer_branches: Callable[[Config, int], tuple[str, Any, str]]
    junctions: tuple[str, ...] = ("shared",)
    label_junctions: tuple[str, ...] = ()
    fixed_nodes: int | None = None
    client_server: bool = False
    trains_as: str | None = None
    ships_activations: bool = False

    def labels(self) -> list[str]:
        """The strategy's legend labels: its name, or ``<name>-<junction>`` per :attr:`label_junctions`."""
        return [f"{self.name}-{j}" for j in self.label_junctions] if self.label_junctions else [self.name]


# --------------------------------------------------------------------------------------- shared checks

def _refuse_set(cfg: Config, key: str, why: str) -> None:
    if getattr(cfg, key) is not None:
        raise ConfigError(key, getattr(cfg, key), why)


def _fixed(cfg: Config, key: str, allowed: int, why: str) -> None:
    value = getattr(cfg, key)
    if value is not None and value != allowed:
        raise ConfigError(key, value, why)


def _whole_model(cfg: Config, s: str) -> None:
    """The checks of a strategy whose shape the user cannot choose (``centralized``, ``fl``, ``mp``)."""
    _refuse_set(cfg, "junction_at", f"strategy {s} fixes the junction; use strategy=sl, sfl or fpl to cut a head")
    _refuse_set(cfg, "trunk_stages", f"strategy {s} fixes the stages; use strategy=fpl to choose them")
    if cfg.branch_stages != 1:
        raise ConfigError("branch_stages", cfg.branch_stages,
                          f"strategy {s} has one stage per branch; use strategy=fpl for split branches")


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _averaged(row: Mapping[str, Any]) -> str:
    every = int(row.get("sync_every", 1) or 1)
    return "averaged every round" if every == 1 else f"averaged every {every} rounds"


# ----------------------------------------------------------------------------- what explore enumerates

CUTS = ("balanced", "all")
CUT_BYS = {"balanced": ("flops", "count"), "all": ("flops",)}  # with explicit cuts cut_by plays no part


def cut_sets(lo: int, hi: int, parts: int, cuts: str) -> Iterator[list[int] | None]:
    """Cut lists for blocks ``lo:hi`` in ``parts`` non-empty stages: every placement (``cuts="all"``),
    or None, which lets :func:`fplstudy.plans.plan.resolve` balance them (``cuts="balanced"``)."""
    if parts == 1 or cuts == "balanced":
        yield None
        return
    for combo in itertools.combinations(range(lo + 1, hi), parts - 1):
        yield list(combo)


# ------------------------------------------------------------------------------------- centralized

def _centralized(cfg: Config, n_blocks: int, default_junction: int) -> Shape:
    _whole_model(cfg, "centralized")
    if cfg.nodes != 1:
        raise ConfigError("nodes", cfg.nodes, "strategy centralized runs on exactly 1 node (use nodes=1)")
    _fixed(cfg, "branches", 1, "strategy centralized has exactly 1 branch")
    return Shape(1, 1, 0, n_blocks, "shared", cfg.sync or "none", False)


def _centralized_candidates(a: Axes) -> Iterator[dict[str, Any]]:
    yield {"strategy": "centralized", "nodes": a.nodes}


# -------------------------------------------------------------------------------------------- fl

def _fl(cfg: Config, n_blocks: int, default_junction: int) -> Shape:
    _whole_model(cfg, "fl")
    _fixed(cfg, "branches", cfg.nodes, f"strategy fl has one branch per node (branches = nodes = {cfg.nodes})")
    return Shape(cfg.nodes, 1, 0, n_blocks, "shared", cfg.sync or "fedavg", True)


def _fl_candidates(a: Axes) -> Iterator[dict[str, Any]]:
    for se in a.periods:
        yield {"strategy": "fl", "nodes": a.nodes, "sync_every": se}


# -------------------------------------------------------------------------------------------- mp

def _mp(cfg: Config, n_blocks: int, default_junction: int) -> Shape:
    _whole_model(cfg, "mp")
    _fixed(cfg, "branches", 1, "strategy mp has exactly 1 branch (use strategy=fpl for several)")
    if cfg.nodes > n_blocks:
        raise ConfigError("nodes", cfg.nodes,
                          f"strategy mp puts one stage per node and the model has only {n_blocks} blocks; "
                          f"use nodes <= {n_blocks}")
    return Shape(1, 0, cfg.nodes, 0, "shared", cfg.sync or "none", False)


def _mp_candidates(a: Axes) -> Iterator[dict[str, Any]]:
    for tc in cut_sets(0, a.n_blocks, min(a.nodes, a.n_blocks), a.cuts):
        for cut_by in CUT_BYS[a.cuts]:
            yield {"strategy": "mp", "nodes": a.nodes, "trunk_cuts": tc, "cut_by": cut_by}


def _trunk_cuts(plan: ResolvedPlan) -> str:
    return "-".join(str(t.start) for t in plan.trunk[1:])


def _mp_words(row: Mapping[str, Any]) -> str:
    cuts = str(row.get("trunk_cuts", "")).split()
    where = (f", cut{'s' if len(cuts) > 1 else ''} after layer{'s' if len(cuts) > 1 else ''} "
             f"{', '.join(cuts)}") if cuts else ""
    return f"MP: a chain of {int(row['nodes'])} nodes{where}"


# --------------------------------------------------------------------------------------- sl and sfl

def _split(s: str, relay: bool) -> Callable[[Config, int, int], Shape]:
    """The preset of a split strategy: a one-node server and nodes - 1 one-node clients; ``relay``:
    the clients take turns (``sl``), else their heads are averaged (``sfl``)."""
    def shape(cfg: Config, n_blocks: int, default_junction: int) -> Shape:
        junction_at = default_junction if cfg.junction_at is None else cfg.junction_at
        if cfg.nodes < 2:
            raise ConfigError("nodes", cfg.nodes, f"strategy {s} needs a server and at least one client (nodes >= 2)")
        _fixed(cfg, "branches", cfg.nodes - 1, f"strategy {s} has nodes - 1 = {cfg.nodes - 1} clients (branches)")
        _fixed(cfg, "trunk_stages", 1, f"strategy {s} has one server; use strategy=fpl for a split trunk")
        if cfg.branch_stages != 1:
            raise ConfigError("branch_stages", cfg.branch_stages,
                              f"strategy {s} has one-node clients; use strategy=fpl for split branches")
        return Shape(cfg.nodes - 1, 1, 1, junction_at, "shared", cfg.sync or ("relay" if relay else "fedavg"), False)
    return shape


def _split_candidates(s: str, periodic: bool) -> Callable[[Axes], Iterator[dict[str, Any]]]:
    def candidates(a: Axes) -> Iterator[dict[str, Any]]:
        for j in range(1, a.n_blocks):
            for se in (a.periods if periodic else (1,)):
                yield {"strategy": s, "nodes": a.nodes, "junction_at": j, "sync_every": se}
    return candidates


def _split_name(s: str, periodic: bool) -> Callable[[ResolvedPlan], str]:
    return lambda plan: f"{s}-{plan.config.nodes}-j{plan.junction_at}" + (
        f"-every{plan.sync_every}" if periodic else "")


def _split_words(short: str, averaged: bool) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: (f"{short}: {_count(int(row['nodes']) - 1, 'client')} + a server, cut after layer "
                        f"{int(row['junction_at'])}" + (f", {_averaged(row)}" if averaged else ""))


def _split_fewer(cfg: Config, n_train: int) -> tuple[str, Any, str]:
    return "nodes", cfg.nodes, f"use at most {n_train + 1} nodes (one server, {n_train} clients)"


# -------------------------------------------------------------------------------------------- fpl

def _fpl(cfg: Config, n_blocks: int, default_junction: int) -> Shape:
    junction_at = default_junction if cfg.junction_at is None else cfg.junction_at
    junction = cfg.junction or "adapter"
    sb = cfg.branch_stages
    if cfg.branches is not None:
        d = cfg.branches
    else:
        d = max(1, (cfg.nodes // 2) // sb)
    st = cfg.trunk_stages if cfg.trunk_stages is not None else cfg.nodes - d * sb
    if st < 1:
        raise ConfigError("branches", d,
                          f"fpl needs nodes = branches x branch_stages + trunk_stages with trunk_stages >= 1; "
                          f"{d} x {sb} leaves {cfg.nodes - d * sb} of nodes={cfg.nodes} for the trunk")
    if d * sb + st != cfg.nodes:
        raise ConfigError("trunk_stages", st,
                          f"fpl needs nodes = branches x branch_stages + trunk_stages = {d} x {sb} + {st} "
                          f"= {d * sb + st}, but nodes={cfg.nodes}")
    sync = cfg.sync or ("none" if junction == "concat" else "fedavg")
    return Shape(d, sb, st, junction_at, junction, sync, False)


def _fpl_candidates(a: Axes) -> Iterator[dict[str, Any]]:
    nodes, n_blocks, cuts = a.nodes, a.n_blocks, a.cuts
    for sb in range(1, nodes):
        for d in range(1, nodes // sb + 1):
            st = nodes - d * sb
            if st < 1:
                continue
            for j in range(sb, n_blocks - st + 1):
                for bc, tc in itertools.product(cut_sets(0, j, sb, cuts), cut_sets(j, n_blocks, st, cuts)):
                    for junction in a.junctions:
                        if a.features and junction != "concat":
                            continue  # a features partition only fits concat
                        for sync in a.syncs:
                            for se in (a.periods if sync == "fedavg" else (1,)):
                                out = {"strategy": "fpl", "nodes": nodes, "branches": d, "branch_stages": sb,
                                       "trunk_stages": st, "junction": junction, "junction_at": j,
                                       "branch_cuts": bc, "trunk_cuts": tc, "sync": sync, "sync_every": se}
                                if junction == "concat":
                                    out["partition"] = "features"
                                for cut_by in CUT_BYS[cuts]:
                                    yield {**out, "cut_by": cut_by}


def _fpl_name(plan: ResolvedPlan) -> str:
    sb = len(plan.branches[0].stages)
    branch_cuts = "-".join(str(t.start) for t in plan.branches[0].stages[1:])
    sync = plan.sync + (str(plan.sync_every) if plan.sync == "fedavg" else "")
    return (f"fpl-{len(plan.branches)}x{sb}+{len(plan.trunk)}-j{plan.junction_at}-{plan.junction}-{sync}"
            f"-b{branch_cuts}-t{_trunk_cuts(plan)}")


def _fpl_words(row: Mapping[str, Any]) -> str:
    d, sb, st = int(row["branches"]), int(row["branch_stages"]), int(row["trunk_stages"])
    branches = _count(d, "branch", "branches") + (f" of {sb} nodes" if sb > 1 else "")
    sync = {"none": "no averaging", "fedavg": f"branches {_averaged(row)}", "relay": "branches take turns"}[row["sync"]]
    return (f"FPL: {branches} + a trunk of {_count(st, 'node')}, cut after layer {int(row['junction_at'])}, "
            f"{row['junction']} junction, {sync}")


def _fpl_fewer(cfg: Config, n_train: int) -> tuple[str, Any, str]:
    if cfg.branches is not None:
        return "branches", cfg.branches, f"use branches <= {n_train}"
    return "nodes", cfg.nodes, f"set branches <= {n_train}"


def _fewer_branches(cfg: Config, n_train: int) -> tuple[str, Any, str]:
    return "nodes", cfg.nodes, f"set branches <= {n_train}"


# ------------------------------------------------------------------------------------------ registry

_STRATEGIES = (
    Strategy(
        name="centralized", legend=0, shape=_centralized, candidates=_centralized_candidates,
        plan_name=lambda plan: f"centralized-{plan.config.nodes}", describe=lambda row: "centralized (1 node)",
        fewer_branches=_fewer_branches, fixed_nodes=1),
    Strategy(
        name="fl", legend=2, shape=_fl, candidates=_fl_candidates,
        plan_name=lambda plan: f"fl-{plan.config.nodes}-every{plan.sync_every}",
        describe=lambda row: f"FL: {_count(int(row['nodes']), 'client')} + an aggregator, {_averaged(row)}",
        fewer_branches=lambda cfg, n_train: ("nodes", cfg.nodes, f"use at most {n_train} nodes")),
    Strategy(
        name="mp", legend=1, shape=_mp, candidates=_mp_candidates,
        plan_name=lambda plan: f"mp-{plan.config.nodes}-t{_trunk_cuts(plan)}", describe=_mp_words,
        fewer_branches=_fewer_branches, trains_as="centralized", ships_activations=True),
    Strategy(
        name="sl", legend=3, shape=_split("sl", relay=True),
        candidates=_split_candidates("sl", periodic=False), plan_name=_split_name("sl", periodic=False),
        describe=_split_words("SL", averaged=False), fewer_branches=_split_fewer, client_server=True,
        ships_activations=True),
    Strategy(
        name="sfl", legend=4, shape=_split("sfl", relay=False),
        candidates=_split_candidates("sfl", periodic=True), plan_name=_split_name("sfl", periodic=True),
        describe=_split_words("SFL", averaged=True), fewer_branches=_split_fewer, client_server=True,
        ships_activations=True),
    Strategy(
        name="fpl", legend=5, shape=_fpl, candidates=_fpl_candidates, plan_name=_fpl_name,
        describe=_fpl_words, fewer_branches=_fpl_fewer, junctions=("adapter", "shared", "concat"),
        label_junctions=("shared", "adapter", "concat"), ships_activations=True),
)
REGISTRY: dict[str, Strategy] = {s.name: s for s in _STRATEGIES}  # in DESIGN.md's order (the teaching walk's)
STRATEGIES: tuple[str, ...] = tuple(REGISTRY)
LEGEND_ORDER: tuple[str, ...] = tuple(sorted(REGISTRY, key=lambda name: REGISTRY[name].legend))
ACTIVATION_STRATEGIES: tuple[str, ...] = tuple(s for s in LEGEND_ORDER if REGISTRY[s].ships_activations)
# Labels of the study's tables and figures: the strategies, fpl split by junction (Strategy.label_junctions);
# fplstudy.study.tables.plan_label gives a plan's label, fplstudy.views.looks each label's colour and marker.
LABEL_ORDER: tuple[str, ...] = tuple(label for s in LEGEND_ORDER for label in REGISTRY[s].labels())


def strategy(name: Any, key: str = "strategy") -> Strategy:
    """The registered strategy called ``name``.

    Args:
        name: a strategy name (a config's ``strategy``).
        key: the config key to name in the error.

    Raises:
        ConfigError: an unknown name (naming ``key``, the value and the known strategies).
    """
    if not isinstance(name, str) or name not in REGISTRY:
        raise ConfigError(key, name, f"known strategies: {', '.join(STRATEGIES)}")
    return REGISTRY[name]


def preset(cfg: Config, n_blocks: int, default_junction: int) -> Shape:
    """Derive the plan shape of ``cfg.strategy``.

    Args:
        cfg: validated config.
        n_blocks: blocks of the model.
        default_junction: the model's default head size (blocks below the junction).

    Returns:
        The :class:`Shape`.

    Raises:
        ConfigError: an unknown strategy, or ``nodes``, ``branches``, stages or junction that do not fit it.
    """
    s = strategy(cfg.strategy)
    if cfg.junction is not None and cfg.junction not in s.junctions:
        others = [j for j in JUNCTIONS if j not in s.junctions]
        where = [t.name for t in REGISTRY.values() if set(others) <= set(t.junctions)]
        raise ConfigError("junction", cfg.junction,
                          f"strategy {s.name} has no junction layer; {' and '.join(repr(j) for j in others)} "
                          f"need strategy={' or '.join(where)}")
    return s.shape(cfg, n_blocks, default_junction)
