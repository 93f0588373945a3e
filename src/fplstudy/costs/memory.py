"""Memory and model size: what every node stores, and how big the deployed model is.

Peak memory per node (:func:`peak_memory`), in bytes, float32 throughout:

- ``params_bytes`` — parameters and floating-point buffers (e.g. BatchNorm running statistics) of the
  blocks the node holds: its branch stages, its junction adapter, its trunk stages;
- ``grads_bytes`` — one gradient per trainable parameter;
- ``optimizer_bytes`` — SGD's momentum buffer, one per trainable parameter, iff ``momentum > 0``;
- ``activations_bytes`` — what autograd keeps for backward (``BlockProfile.saved_bytes`` per sample,
  summed over the node's blocks, plus the activations it received from another node, which the
  first block of its chunk reads in backward) × samples in flight: one micro-batch (``sequential``),
  the whole batch (``gpipe``), or ``min(M, w)`` micro-batches (``1f1b``, w = the node's depth from
  the end of the chain, :func:`fplstudy.costs.makespan.chain_depths`). A node serving several branches
  (the trunk) holds one batch at a time;
- ``sync_bytes`` — on the aggregator: a ``fedavg`` receives every replica of one stage position and
  builds their average ((D + 1) × the largest stage), a ``relay`` holds one head stage in passing.

Model size (:func:`model_size`): ``model_params`` — parameters a data owner deploys (its branch, its
adapter, the trunk; the largest over branches; for ``concat`` every branch with the trunk, as the
views form one model); ``model_params_ratio`` — that over the original
model's parameters (> 1 only through junction adapters); ``params_stored_total`` — parameters held
for training by all nodes together (every branch copy, every adapter, the trunk once).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from fplstudy.config import ConfigError
from fplstudy.costs.makespan import chain_depths
from fplstudy.plans.program import (
    branch_chain,
    branch_in_shape,
    chain_in_shapes,
    chunk_profiles,
    trunk_chain,
)

FLOAT_BYTES = 4  # float32

MEMORY_COLUMNS = ("node", "role", "params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes",
                  "sync_bytes", "total_bytes")


def node_chunks(plan, d: int) -> list[tuple[str, str, tuple, tuple[int, ...], bool]]:
    """The chunks a batch of branch ``d`` runs through: ``(node, kind, profiles, in_shape, received)``.

    ``kind`` is ``branch``, ``adapter`` or ``trunk``; ``received`` says whether the chunk's input came
    from another node. For ``concat`` the trunk follows the branch's own chunks and reads the joined
    activations.
    """
    chain = branch_chain(plan, d)
    shapes = chain_in_shapes(plan, chain, branch_in_shape(plan, d))
    if plan.junction == "concat":
        trunk = trunk_chain(plan)
        chain, shapes = chain + trunk, shapes + chain_in_shapes(plan, trunk, plan.junction_shape())
    n_branch = len(plan.branches[d].stages)
    out = []
    for i, (ch, shape) in enumerate(zip(chain, shapes)):
        kind = "adapter" if ch.kind == "adapter" else ("branch" if i < n_branch else "trunk")
        out.append((ch.node, kind, chunk_profiles(plan, ch.blocks, shape), tuple(shape),
                    i > 0 and chain[i - 1].node != ch.node))
    return out


def _held(plan) -> dict[str, list]:
    """Profiles of the blocks each node holds (each block once per node; the trunk is shared)."""
    held: dict[str, dict[tuple, object]] = {n.name: {} for n in plan.nodes}
    for d in range(len(plan.branches)):
        for node, kind, profs, _shape, _received in node_chunks(plan, d):
            for p in profs:
                held[node][(kind, -1 if kind == "trunk" else d, p.name)] = p
    return {k: list(v.values()) for k, v in held.items()}


def _state_bytes(p) -> int:
    return p.param_bytes + (p.sync_numel - p.params) * FLOAT_BYTES


def peak_memory(plan) -> pd.DataFrame:
    """Peak memory of every node, by what it holds (see module docstring).

    Returns:
        A DataFrame with columns :data:`MEMORY_COLUMNS`, one row per node in plan order.
    """
    return pd.DataFrame(memory_rows(plan), columns=list(MEMORY_COLUMNS))


def memory_rows(plan) -> list[tuple]:
    """:func:`peak_memory`'s rows as tuples (no DataFrame: what a search over many plans needs)."""
    cfg = plan.config
    held = _held(plan)
    m = cfg.micro_batches
    micro = math.ceil(cfg.batch_size / m)
    depth = chain_depths(plan)
    per_sample: dict[str, int] = {}
    for d in range(len(plan.branches)):
        mine: dict[str, int] = {}
        for node, _kind, profs, shape, received in node_chunks(plan, d):
            extra = math.prod(shape) * FLOAT_BYTES if received else 0
            mine[node] = mine.get(node, 0) + sum(p.saved_bytes for p in profs) + extra
        for node, b in mine.items():
            per_sample[node] = max(per_sample.get(node, 0), b)
    sync = 0
    if plan.aggregator and plan.sync != "none" and plan.branches and plan.branches[0].stages:
        largest = max(sum(p.sync_numel for p in plan.profile[s.start:s.stop]) for s in plan.branches[0].stages)
        copies = len(plan.branches) + 1 if plan.sync == "fedavg" else 1
        sync = copies * largest * FLOAT_BYTES
    rows = []
    for n in plan.nodes:
        profs = held[n.name]
        params = sum(_state_bytes(p) for p in profs)
        grads = sum(p.param_bytes for p in profs)
        optim = grads if cfg.momentum > 0 else 0
        if cfg.pipeline == "sequential":
            samples = micro
        elif cfg.pipeline == "gpipe":
            samples = cfg.batch_size
        else:
            samples = min(cfg.batch_size, min(m, depth.get(n.name, 1)) * micro)
        act = per_sample.get(n.name, 0) * samples
        s = sync if n.name == plan.aggregator else 0
        rows.append((n.name, n.role, params, grads, optim, act, s, params + grads + optim + act + s))
    return rows


def misfits(plan, profiles) -> list[tuple[str, int, float]]:
    """The nodes whose peak memory (:func:`memory_rows`) exceeds their device's ``memory_bytes``:
    ``(node, peak bytes, device bytes)`` each, in plan order (a device without ``memory_bytes`` fits)."""
    out = []
    for row in memory_rows(plan):
        room = profiles.device(plan.node(row[0]).device).memory_bytes
        if room is not None and row[-1] > room:
            out.append((row[0], row[-1], room))
    return out


def check_memory(plan, profiles) -> None:
    """Refuse a plan with a node that needs more memory at its peak than its device has (:func:`misfits`),
    naming the config key that chose the device.

    Raises:
        ConfigError: for the first such node.
    """
    from fplstudy.facts.profiles import device_key

    bad = misfits(plan, profiles)
    if bad:
        name, need, room = bad[0]
        node = plan.node(name)
        raise ConfigError(device_key(plan, name), node.device,
                          f"node {name} ({node.role}) needs {need / 1e6:.3g} MB at its peak and the device has "
                          f"{room / 1e6:.3g} MB (memory_bytes); choose a device with more memory, or cut the model "
                          f"into more stages, or lower batch_size or raise micro_batches")


def model_size(plan) -> dict:
    """Deployed model size against the original (see module docstring).

    Returns:
        ``{"model_params", "model_params_ratio", "params_stored_total", "original_params"}``.
    """
    original = sum(p.params for p in plan.profile)
    trunk = sum(p.params for s in plan.trunk for p in plan.profile[s.start:s.stop])
    deployed = [sum(p.params for _n, kind, profs, _s, _r in node_chunks(plan, d) if kind != "trunk" for p in profs)
                for d in range(len(plan.branches))]
    if plan.junction == "concat":  # the views' branches form one model together with the trunk
        model_params = sum(deployed) + trunk
    else:
        model_params = max(deployed, default=0) + trunk
    stored = sum(p.params for profs in _held(plan).values() for p in profs)
    return {"model_params": int(model_params), "model_params_ratio": model_params / original,
            "params_stored_total": int(stored), "original_params": int(original)}


MEMORY_SHARE = 0.5  # the share of this machine's available memory one command may plan to use (the rest: its OS,
#                     the other processes, and what an estimate leaves out)


def available_memory_bytes() -> float:
    """The memory this machine can give a process now without swapping: Linux's ``MemAvailable`` (free memory
    plus the caches it can drop), else the free physical pages, else infinity (nothing to check against)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def gib(nbytes: float) -> str:
    """Bytes as GiB for a message (``12.3 GiB``)."""
    return f"{nbytes / 2**30:.3g} GiB"
