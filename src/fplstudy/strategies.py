"""The six named strategies as presets of one plan structure (see DESIGN.md, "Named strategies").

A preset turns the user's ``nodes`` (and optional ``branches``, ``junction`` …) into the plan's shape:
D branches of S_b stages, a junction after ``junction_at`` blocks, a trunk of S_t stages, a sync
policy. It never adds a code path: every strategy runs through the same engine.

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
"""

from __future__ import annotations

from dataclasses import dataclass

from fplstudy.config import Config, ConfigError


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


def _refuse_set(cfg: Config, key: str, why: str) -> None:
    if getattr(cfg, key) is not None:
        raise ConfigError(key, getattr(cfg, key), why)


def _fixed(cfg: Config, key: str, allowed: int, why: str) -> None:
    value = getattr(cfg, key)
    if value is not None and value != allowed:
        raise ConfigError(key, value, why)


def preset(cfg: Config, n_blocks: int, default_junction: int) -> Shape:
    """Derive the plan shape of ``cfg.strategy``.

    Args:
        cfg: validated config.
        n_blocks: blocks of the model.
        default_junction: the model's default head size (blocks below the junction).

    Returns:
        The :class:`Shape`.

    Raises:
        ConfigError: when ``nodes``, ``branches``, stages or junction do not fit the strategy.
    """
    s = cfg.strategy
    junction = cfg.junction
    if s != "fpl" and junction not in (None, "shared"):
        raise ConfigError("junction", junction,
                          f"strategy {s} has no junction layer; 'adapter' and 'concat' need strategy=fpl")
    if s in ("centralized", "fl", "mp"):
        _refuse_set(cfg, "junction_at", f"strategy {s} fixes the junction; use strategy=sl, sfl or fpl to cut a head")
        _refuse_set(cfg, "trunk_stages", f"strategy {s} fixes the stages; use strategy=fpl to choose them")
        if cfg.branch_stages != 1:
            raise ConfigError("branch_stages", cfg.branch_stages,
                              f"strategy {s} has one stage per branch; use strategy=fpl for split branches")
    if s == "centralized":
        if cfg.nodes != 1:
            raise ConfigError("nodes", cfg.nodes, "strategy centralized runs on exactly 1 node (use nodes=1)")
        _fixed(cfg, "branches", 1, "strategy centralized has exactly 1 branch")
        return Shape(1, 1, 0, n_blocks, "shared", cfg.sync or "none", False)
    if s == "fl":
        _fixed(cfg, "branches", cfg.nodes, f"strategy fl has one branch per node (branches = nodes = {cfg.nodes})")
        return Shape(cfg.nodes, 1, 0, n_blocks, "shared", cfg.sync or "fedavg", True)
    if s == "mp":
        _fixed(cfg, "branches", 1, "strategy mp has exactly 1 branch (use strategy=fpl for several)")
        if cfg.nodes > n_blocks:
            raise ConfigError("nodes", cfg.nodes,
                              f"strategy mp puts one stage per node and the model has only {n_blocks} blocks; "
                              f"use nodes <= {n_blocks}")
        return Shape(1, 0, cfg.nodes, 0, "shared", cfg.sync or "none", False)
    junction_at = default_junction if cfg.junction_at is None else cfg.junction_at
    if s in ("sl", "sfl"):
        if cfg.nodes < 2:
            raise ConfigError("nodes", cfg.nodes, f"strategy {s} needs a server and at least one client (nodes >= 2)")
        _fixed(cfg, "branches", cfg.nodes - 1, f"strategy {s} has nodes - 1 = {cfg.nodes - 1} clients (branches)")
        _fixed(cfg, "trunk_stages", 1, f"strategy {s} has one server; use strategy=fpl for a split trunk")
        if cfg.branch_stages != 1:
            raise ConfigError("branch_stages", cfg.branch_stages,
                              f"strategy {s} has one-node clients; use strategy=fpl for split branches")
        sync = cfg.sync or ("relay" if s == "sl" else "fedavg")
        return Shape(cfg.nodes - 1, 1, 1, junction_at, "shared", sync, False)
    # fpl
    junction = junction or "adapter"
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
