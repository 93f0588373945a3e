"""Plans: the whole distribution of one learning task, as plain validated data.

:func:`resolve` turns a :class:`~fplstudy.config.Config` into a :class:`Plan`: which node holds which
blocks of which branch or of the trunk, where the junction is and in which mode, who owns data,
who computes the loss, who aggregates, and with which device profile. Every check that can be made
without data happens here, so a bad config is refused before any training.

Node naming: ``n0, n1, …`` — branch stage holders first (branch 0 stage 0, branch 0 stage 1, …),
then the trunk stages in order, then a dedicated aggregator if the strategy has one (``fl``). What a node
holds is typed data (:class:`Node`: ``part``, ``branch``, ``stage``, ``aggregates``); its ``side`` (edge or
server) and its ``role`` as the ledger writes it (``branch0/stage1``, ``trunk/stage0+aggregator``) follow.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from fplstudy.config import Config, ConfigError
from fplstudy.facts.datasets import (
    DATASET_META,
    DATASET_SIZES,
    DATASETS,
    DRAWN_SPLIT,
    split_sizes,
)
from fplstudy.facts.flops import BlockProfile, profile_blocks, profile_model
from fplstudy.facts.models import DATASET_DEFAULT_MODEL, MODELS
from fplstudy.facts.topology import place, site_of
from fplstudy.plans.strategies import Shape, preset, strategy

# Sanity bound on the batch steps of a run (rounds x local_epochs x batches per epoch, over all
# branches): 1e7 steps is ~3 h at 1 ms a step on the smallest model, and a dry run keeps the events of
# every step in memory (~3 KB a step).
MAX_BATCH_STEPS = 10_000_000


@dataclass(frozen=True)
class Stage:
    """A contiguous run of blocks ``[start, stop)`` held by one node."""

    node: str
    start: int
    stop: int
    blocks: tuple[str, ...]


@dataclass(frozen=True)
class Branch:
    """One copy of the lower part of the model, trained on one shard.

    Attributes:
        index: branch number d.
        stages: its stages in order (empty in ``mp``: the branch holds no blocks).
        data_node: node that holds the shard (first stage holder, or the first trunk node in ``mp``).
        adapter_node: node holding this branch's junction adapter (``adapter`` junction), else None.
        view: for ``concat``, the input rows ``(start, stop)`` this branch sees; else None.
    """

    index: int
    stages: tuple[Stage, ...]
    data_node: str
    adapter_node: str | None = None
    view: tuple[int, int] | None = None


NODE_PARTS = ("branch", "trunk", "aggregator")  # what a node holds: a branch stage, a trunk stage, or no layers


@dataclass(frozen=True)
class Node:
    """A participant: its name, the part of the plan it holds and its device profile name.

    Attributes:
        name: ``n0``, ``n1``, … (module docstring).
        part: ``branch`` (stage ``stage`` of branch ``branch``; its last stage also holds the branch's
            adapter under the ``adapter`` junction), ``trunk`` (trunk stage ``stage``) or ``aggregator`` (a
            dedicated aggregator, holding no layers).
        device: its device profile name.
        branch: the branch index of a ``branch`` node; None otherwise.
        stage: the stage index of a ``branch`` or ``trunk`` node within its branch or the trunk; None for an
            ``aggregator``.
        aggregates: whether this node is the plan's :attr:`Plan.aggregator`, which syncs or relays the
            replicated parts (a dedicated aggregator, or the first trunk stage of a plan that syncs without
            one).
        point: the topology node that hosts it (config key ``topology``, :func:`fplstudy.facts.topology.place`);
            None without a topology.
    """

    name: str
    part: str
    device: str
    branch: int | None = None
    stage: int | None = None
    aggregates: bool = False
    point: str | None = None

    def __post_init__(self) -> None:
        if self.part not in NODE_PARTS:
            raise ValueError(f"Node.part: got {self.part!r}; use one of {', '.join(NODE_PARTS)}")
        if (self.branch is not None) != (self.part == "branch"):
            raise ValueError(f"Node.branch: got {self.branch!r} for part {self.part!r}; a branch node needs its "
                             "branch index, any other node None")
        if (self.stage is None) != (self.part == "aggregator"):
            raise ValueError(f"Node.stage: got {self.stage!r} for part {self.part!r}; a branch or trunk node needs "
                             "its stage index, an aggregator None")
        if self.part == "aggregator" and not self.aggregates:
            raise ValueError("Node.aggregates: got False for a dedicated aggregator; set it True")

    @property
    def side(self) -> str:
        """``edge`` (a branch stage holder) or ``server`` (a trunk stage or the aggregator): which link rate a
        message uses depends on it (:func:`fplstudy.costs.pricing.price_message`)."""
        return "edge" if self.part == "branch" else "server"

    def on_server(self, junction_at: int) -> bool:
        """Whether the node runs on the server side: the aggregator, and trunk stages of a plan with a head
        (``junction_at > 0``; mp's trunk is the whole model, on the edge). Those nodes take ``server_device``,
        and on a topology the default placement puts them on its last nodes."""
        return self.part == "aggregator" or (self.part == "trunk" and junction_at > 0)

    @property
    def role(self) -> str:
        """The role as ``ledger.csv`` and the memory table write it: ``branch<d>/stage<s>``, ``trunk/stage<s>``
        (``+aggregator`` when it aggregates) or ``aggregator``."""
        if self.part == "branch":
            return f"branch{self.branch}/stage{self.stage}"
        if self.part == "trunk":
            return f"trunk/stage{self.stage}" + ("+aggregator" if self.aggregates else "")
        return "aggregator"


@dataclass(frozen=True)
class Plan:
    """A resolved plan (see module docstring). Build with :func:`resolve`."""

    config: Config
    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    block_names: tuple[str, ...]
    junction: str
    junction_at: int
    branches: tuple[Branch, ...]
    trunk: tuple[Stage, ...]
    sync: str
    sync_every: int
    aggregator: str | None
    nodes: tuple[Node, ...]
    profile: tuple[BlockProfile, ...] = field(repr=False)
    site: Any = field(default=None, repr=False, compare=False)  # the Topology of config key topology, or None
    # every round's Turnout once a round deadline is settled (fplstudy.costs.dryrun.settle_deadline), else None
    turnouts: Any = field(default=None, repr=False, compare=False)

    @property
    def strategy(self) -> str:
        return self.config.strategy

    @property
    def n_blocks(self) -> int:
        return len(self.block_names)

    @property
    def branch_order(self) -> str:
        """How branches share a round: ``lockstep`` (concat: every branch on the same batch),
        ``turns`` (relay: one branch after another) or ``interleaved`` (batch by batch, round-robin)."""
        if self.junction == "concat":
            return "lockstep"
        if self.sync == "relay":
            return "turns"
        return "interleaved"

    def loss_node(self, branch: int) -> str:
        """Node that computes the loss for a batch of ``branch``."""
        if self.trunk:
            return self.trunk[-1].node
        return self.branches[branch].stages[-1].node

    def junction_shape(self) -> tuple[int, ...]:
        """Per-sample activation shape at the junction (the trunk's input)."""
        if self.junction_at == 0:
            return tuple(self.input_shape)
        return self.profile[self.junction_at - 1].out_shape

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def describe(self) -> str:
        """A human-readable table: which node holds which layers, and where the junction is."""
        extra = len(self.nodes) - self.config.nodes
        lines = [f"plan: strategy={self.strategy} model={self.model} dataset={self.config.dataset} "
                 f"nodes={self.config.nodes}" + (f" (+{extra} aggregator)" if extra else "")
                 + f" branches={len(self.branches)} junction={self.junction}"
                 f"@{self.junction_at} sync={self.sync}"
                 + (f"/every {self.sync_every} round(s)" if self.sync != "none" else "")
                 + f" schedule={self.branch_order}"]
        params = [p.params for p in self.profile]
        for b in self.branches:
            view = f" view rows {b.view[0]}:{b.view[1]}" if b.view else ""
            lines.append(f"  branch {b.index} (data on {b.data_node}{view})")
            for s in b.stages:
                lines.append(f"    {s.node:>4} [{self.node(s.node).device}] blocks {s.start}:{s.stop} "
                             f"{','.join(s.blocks)}  params={sum(params[s.start:s.stop])}")
            if b.adapter_node:
                lines.append(f"    {b.adapter_node:>4} junction adapter for {self.junction_shape()}")
        lines.append(f"  --- junction after block {self.junction_at} ({self.junction}) ---")
        for s in self.trunk:
            lines.append(f"  trunk {s.node:>4} [{self.node(s.node).device}] blocks {s.start}:{s.stop} "
                         f"{','.join(s.blocks)}  params={sum(params[s.start:s.stop])}")
        if self.aggregator:
            lines.append(f"  aggregator: {self.aggregator} [{self.node(self.aggregator).device}]")
        return "\n".join(lines)


def training_samples(cfg: Config) -> int:
    """Training samples of ``cfg``'s dataset after the test split and ``max_train_samples``, known
    without loading the data.

    Raises:
        ConfigError: naming ``test_fraction`` when a drawn split would leave a class without a test
            or a training sample (scikit-learn's stratified split needs one of each per class).
    """
    n_train, n_test = split_sizes(cfg.dataset, cfg.test_fraction, cfg.max_train_samples)
    if cfg.dataset in DRAWN_SPLIT:
        total, classes = DATASET_SIZES[cfg.dataset][0], DATASET_META[cfg.dataset][1]
        if not classes <= n_test <= total - classes:
            lo, hi = (classes - 1) / total, (total - classes) / total  # ceil(f * total) in classes..total-classes
            raise ConfigError("test_fraction", cfg.test_fraction,
                              f"the stratified split of the {total} {cfg.dataset} samples needs at least one test and one "
                              f"training sample per class ({classes} each); use a value above {lo:.6g} and "
                              f"at most {hi:.6g} (e.g. 0.2)")
    return n_train


def max_nodes(n_train: int, n_blocks: int) -> int:
    """The most edge nodes any plan can use: fpl with ``n_train`` one-sample branches of
    ``n_blocks - 1`` stages each and a one-stage trunk (every stage holds at least one block)."""
    return max(n_train + 1, n_train * (n_blocks - 1) + 1)


def _check_data_bounds(cfg: Config, shape: Shape, n_train: int, num_classes: int) -> None:
    """Limits derived from the data: every branch needs at least one training sample (so at least
    one batch), a batch at most the whole dataset, shards at most the classes and samples, and
    the run at most :data:`MAX_BATCH_STEPS` batch steps."""
    d = shape.branches
    more = f"(or raise max_train_samples, now {cfg.max_train_samples})" if cfg.max_train_samples else ""
    if cfg.partition != "features" and d > n_train:
        key, value, fix = strategy(cfg.strategy).fewer_branches(cfg, n_train)
        raise ConfigError(key, value, f"{d} branches for {n_train} training samples of {cfg.dataset}: every "
                                      f"branch needs at least one sample (one batch); {fix} {more}".rstrip())
    n_all = DATASET_SIZES[cfg.dataset][0]  # a batch larger than a shard is the whole shard: allowed
    if cfg.batch_size > n_all:
        raise ConfigError("batch_size", cfg.batch_size, f"larger than the {n_all} training samples of the whole "
                                                        f"{cfg.dataset} dataset; use at most {n_all}")
    if cfg.partition == "shards":
        if cfg.classes_per_node > num_classes:
            raise ConfigError("classes_per_node", cfg.classes_per_node,
                              f"{cfg.dataset} has {num_classes} classes; use 1..{num_classes}")
        if d * cfg.classes_per_node > n_train:
            raise ConfigError("classes_per_node", cfg.classes_per_node,
                              f"{d} branches x {cfg.classes_per_node} shards need {d * cfg.classes_per_node} "
                              f"samples but there are {n_train}; use at most {n_train // d}")
    per_branch = n_train if cfg.partition == "features" else math.ceil(n_train / d)
    steps = cfg.rounds * cfg.local_epochs * d * math.ceil(per_branch / cfg.batch_size)
    if steps > MAX_BATCH_STEPS:
        key = "local_epochs" if cfg.local_epochs > cfg.rounds else "rounds"
        raise ConfigError(key, getattr(cfg, key),
                          f"rounds x local_epochs x ~{d * math.ceil(per_branch / cfg.batch_size)} batches per "
                          f"epoch = {steps:.3g} batch steps; at most {MAX_BATCH_STEPS:.0e} (a sanity bound: hours "
                          f"of compute, and a dry run keeps every step's events in memory); lower {key}")


def balanced_cuts(costs: list[int], parts: int) -> list[int]:
    """Split ``costs`` into ``parts`` contiguous non-empty groups minimising the largest group sum.

    Classic linear-partition dynamic program; ties go to the earliest cut. Returns the start index
    of every group after the first (``parts - 1`` cuts, relative to ``costs``).
    """
    n = len(costs)
    prefix = np.concatenate([[0], np.cumsum(costs)])
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    arg = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for k in range(1, parts + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                val = max(best[k - 1][j], prefix[i] - prefix[j])
                if val < best[k][i]:
                    best[k][i], arg[k][i] = val, j
    cuts, i = [], n
    for k in range(parts, 0, -1):
        i = arg[k][i]
        cuts.append(i)
    return sorted(cuts)[1:]


def _default_cuts(lo: int, hi: int, parts: int, cfg: Config, profile: tuple[BlockProfile, ...]) -> list[int]:
    if cfg.cut_by == "count":
        sizes = [len(a) for a in np.array_split(np.arange(lo, hi), parts)]
        return [lo + int(c) for c in np.cumsum(sizes)[:-1]]
    costs = [p.flops_fwd + p.flops_bwd for p in profile[lo:hi]]
    return [lo + c for c in balanced_cuts(costs, parts)]


def _check_cuts(key: str, cuts: list[int] | None, lo: int, hi: int, parts: int, cfg: Config,
                profile: tuple[BlockProfile, ...]) -> list[int]:
    if parts == 0:
        if cuts:
            raise ConfigError(key, cuts, "this part has no stages, so it takes no cuts; leave it out")
        return []
    if hi - lo < parts:
        raise ConfigError(key.replace("_cuts", "_stages"), parts,
                          f"blocks {lo}:{hi} ({hi - lo} blocks) cannot fill {parts} stages; use at most {hi - lo}")
    if cuts is None:
        return _default_cuts(lo, hi, parts, cfg, profile)
    if len(cuts) != parts - 1:
        raise ConfigError(key, cuts, f"{parts} stages need exactly {parts - 1} cut(s)")
    prev = lo
    for c in cuts:
        if not prev < c < hi:
            raise ConfigError(key, cuts, f"cuts must be strictly increasing block indices inside ({lo}, {hi}) "
                                         f"so that every stage has at least one block")
        prev = c
    return list(cuts)


def _stages(bounds: list[int], names: tuple[str, ...], node_names: list[str]) -> tuple[Stage, ...]:
    return tuple(Stage(node, a, b, names[a:b]) for node, a, b in zip(node_names, bounds[:-1], bounds[1:]))


def resolve(cfg: Config) -> Plan:
    """Resolve a config into a :class:`Plan`, checking everything that can be checked without data.

    Raises:
        ConfigError: naming the key, the value and the fix.
    """
    if cfg.dataset not in DATASETS:
        raise ConfigError("dataset", cfg.dataset, f"known datasets: {', '.join(DATASETS)}")
    model = cfg.model or DATASET_DEFAULT_MODEL[cfg.dataset]
    if model not in MODELS:
        raise ConfigError("model", model, f"known models: {', '.join(sorted(MODELS))}")
    input_shape, num_classes = DATASET_META[cfg.dataset]
    n_train = training_samples(cfg)
    profile = profile_model(model, input_shape, num_classes)
    names = tuple(p.name for p in profile)
    n_blocks = len(names)
    shape = preset(cfg, n_blocks, MODELS[model].default_junction)
    _check_data_bounds(cfg, shape, n_train, num_classes)
    j = shape.junction_at
    if shape.cuts_a_head and not 1 <= j <= n_blocks - 1:
        raise ConfigError("junction_at", j, f"the head must hold 1..{n_blocks - 1} of the {n_blocks} blocks "
                                            f"of {model} so that the trunk is not empty")
    if (cfg.partition == "features") != (shape.junction == "concat"):
        if shape.junction == "concat":
            raise ConfigError("partition", cfg.partition, "junction=concat needs partition=features "
                                                          "(every branch sees a view of the same samples)")
        raise ConfigError("partition", cfg.partition, "partition=features needs strategy=fpl with junction=concat")
    if shape.sync == "relay" and shape.trunk_stages == 0:
        raise ConfigError("sync", "relay", "relay passes heads through the server; it needs a trunk "
                                           "(use sync=fedavg or none)")

    branch_cuts = _check_cuts("branch_cuts", cfg.branch_cuts, 0, j, shape.branch_stages, cfg, profile)
    trunk_cuts = _check_cuts("trunk_cuts", cfg.trunk_cuts, j, n_blocks, shape.trunk_stages, cfg, profile)

    nodes: list[Node] = []
    counter = itertools.count()
    branches = []
    views = _concat_views(cfg, shape.branches, input_shape, j, profile, model, num_classes) \
        if shape.junction == "concat" else [None] * shape.branches
    for d in range(shape.branches):
        node_names = [f"n{next(counter)}" for _ in range(shape.branch_stages)]
        for s, name in enumerate(node_names):
            nodes.append(Node(name, "branch", cfg.device, branch=d, stage=s))
        stages = _stages([0, *branch_cuts, j], names, node_names) if shape.branch_stages else ()
        branches.append((d, stages, node_names))
    trunk_names = [f"n{next(counter)}" for _ in range(shape.trunk_stages)]
    trunk_device = cfg.server_device if j > 0 else cfg.device
    for s, name in enumerate(trunk_names):
        nodes.append(Node(name, "trunk", trunk_device, stage=s))
    trunk = _stages([j, *trunk_cuts, n_blocks], names, trunk_names) if shape.trunk_stages else ()

    aggregator = None
    if shape.sync != "none" or shape.dedicated_aggregator:
        if shape.dedicated_aggregator:
            aggregator = f"n{next(counter)}"
            nodes.append(Node(aggregator, "aggregator", cfg.server_device, aggregates=True))
        elif trunk:
            aggregator = trunk[0].node
            at = [n.name for n in nodes].index(aggregator)
            nodes[at] = replace(nodes[at], aggregates=True)
        else:
            raise ConfigError("sync", shape.sync, "there is no node to aggregate on; use sync=none")

    built = []
    for d, stages, node_names in branches:
        data_node = node_names[0] if node_names else trunk_names[0]
        adapter_node = stages[-1].node if shape.junction == "adapter" and stages else None
        built.append(Branch(d, stages, data_node, adapter_node, views[d]))

    overrides = cfg.node_devices or {}
    known = {n.name for n in nodes}
    for name in overrides:
        if name not in known:
            raise ConfigError("node_devices", {name: overrides[name]},
                              f"no node named {name!r} in this plan; nodes are {', '.join(sorted(known))}")
    nodes = [replace(n, device=overrides.get(n.name, n.device)) for n in nodes]
    site, where = _place_on_site(cfg, nodes, j)
    if site is not None:
        nodes = [replace(n, device=site.device_name(where[n.name]), point=where[n.name]) for n in nodes]
    return Plan(cfg, model, tuple(input_shape), num_classes, names, shape.junction, j, tuple(built), trunk,
                shape.sync, cfg.sync_every, aggregator, tuple(nodes), profile, site)


def _place_on_site(cfg: Config, nodes: list[Node], j: int):
    """``(topology, {plan node: topology node})`` for a config with ``topology``, else ``(None, {})``."""
    if cfg.topology is None:
        if cfg.placement:
            raise ConfigError("placement", cfg.placement, "places nodes on a topology; give topology: FILE too")
        return None, {}
    if cfg.node_devices:
        raise ConfigError("node_devices", cfg.node_devices, "with topology, every node's device is the topology "
                                                            "node's that hosts it; drop node_devices or topology")
    site = site_of(cfg)
    server_side = {n.name for n in nodes if n.on_server(j)}
    return site, place(site, nodes, server_side, cfg.placement)


@lru_cache(maxsize=256)
def _view_out_shape(model: str, input_shape: tuple[int, ...], num_classes: int, j: int,
                    strip: tuple[int, ...]) -> tuple[int, ...] | str:
    """Per-sample output shape of the model's first ``j`` blocks on an input view of shape ``strip``,
    or the error message when the head cannot run on it. Cached, failures included: a search over
    plans (:mod:`fplstudy.costs.search`) asks for the same views many times. The profile it measures is
    the one the engine and the ledger look up for that view."""
    try:
        return profile_blocks(model, input_shape, num_classes, 0, j, strip)[-1].out_shape
    except RuntimeError as exc:
        return str(exc)


def _concat_views(cfg: Config, parts: int, input_shape: tuple[int, ...], j: int,
                  profile: tuple[BlockProfile, ...], model: str, num_classes: int) -> list[tuple[int, int]]:
    """Row views of the input for ``concat``: D equal horizontal strips whose branch outputs,
    concatenated along the height, have exactly the trunk's input shape."""
    height = input_shape[1] if len(input_shape) == 3 else input_shape[0]
    if height % parts:
        raise ConfigError("branches", parts, f"junction=concat splits the {height} input rows into equal views; "
                                             f"use a number of branches that divides {height}")
    rows = height // parts
    strip = (input_shape[0], rows, *input_shape[2:])
    out = _view_out_shape(model, tuple(input_shape), num_classes, j, strip)
    if isinstance(out, str):
        raise ConfigError("junction_at", j, f"the head cannot run on a {strip} view ({out}); "
                                            f"move the junction below the first dense block")
    full = profile[j - 1].out_shape
    joined = (out[0], out[1] * parts, *out[2:]) if len(out) == 3 else None
    if joined != full:
        raise ConfigError("junction_at", j, f"{parts} views of {strip} give {out} each at the junction; "
                                            f"joined along the height they must equal {full}; choose another "
                                            f"junction_at or number of branches")
    return [(d * rows, (d + 1) * rows) for d in range(parts)]
