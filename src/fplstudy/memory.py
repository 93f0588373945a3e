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
  the end of the chain, :func:`fplstudy.makespan.chain_depths`). A node serving several branches
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

import pandas as pd

from fplstudy.ledger import adapter_profile, chunk_profiles
from fplstudy.makespan import chain_depths

FLOAT_BYTES = 4  # float32

MEMORY_COLUMNS = ("node", "role", "params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes",
                  "sync_bytes", "total_bytes")


def _branch_in_shape(plan, d: int) -> tuple[int, ...]:
    view = plan.branches[d].view
    if view is None:
        return tuple(plan.input_shape)
    c, _, *rest = plan.input_shape
    return (c, view[1] - view[0], *rest)


def node_chunks(plan, d: int) -> list[tuple[str, tuple, tuple[int, ...], bool]]:
    """The chunks a batch of branch ``d`` runs through: ``(node, profiles, in_shape, received)``.

    ``received`` says whether the chunk's input came from another node. For ``concat`` the trunk
    follows the branch's own chunks and reads the joined activations.
    """
    b = plan.branches[d]
    out = []
    shape = _branch_in_shape(plan, d)
    prev = None
    parts = [(s.node, s.blocks) for s in b.stages]
    if b.adapter_node:
        parts.append((b.adapter_node, ("adapter",)))
    for node, blocks in parts:
        profs = chunk_profiles(plan, blocks, shape)
        out.append((node, profs, shape, prev is not None and prev != node))
        shape, prev = profs[-1].out_shape, node
    if plan.junction == "concat":
        shape = plan.junction_shape()
    for s in plan.trunk:
        profs = chunk_profiles(plan, s.blocks, shape)
        out.append((s.node, profs, shape, prev is not None and prev != s.node))
        shape, prev = profs[-1].out_shape, s.node
    return out


def _held(plan) -> dict[str, list]:
    """Profiles of the blocks each node holds (each block once per node)."""
    held: dict[str, dict[tuple, object]] = {n.name: {} for n in plan.nodes}
    for d, b in enumerate(plan.branches):
        shape = _branch_in_shape(plan, d)
        for s in b.stages:
            profs = chunk_profiles(plan, s.blocks, shape)
            for p in profs:
                held[s.node][("branch", d, p.name)] = p
            shape = profs[-1].out_shape
        if b.adapter_node:
            held[b.adapter_node][("adapter", d)] = adapter_profile(plan.junction_shape())
    for s in plan.trunk:
        for p in plan.profile[s.start:s.stop]:
            held[s.node][("trunk", p.name)] = p
    return {k: list(v.values()) for k, v in held.items()}


def _state_bytes(p) -> int:
    return p.param_bytes + (p.sync_numel - p.params) * FLOAT_BYTES


def peak_memory(plan) -> pd.DataFrame:
    """Peak memory of every node, by what it holds (see module docstring).

    Returns:
        A DataFrame with columns :data:`MEMORY_COLUMNS`, one row per node in plan order.
    """
    cfg = plan.config
    held = _held(plan)
    m = cfg.micro_batches
    micro = math.ceil(cfg.batch_size / m)
    depth = chain_depths(plan)
    per_sample: dict[str, int] = {}
    for d in range(len(plan.branches)):
        mine: dict[str, int] = {}
        for node, profs, _shape, received in node_chunks(plan, d):
            extra = math.prod(_shape) * FLOAT_BYTES if received else 0
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
    return pd.DataFrame(rows, columns=list(MEMORY_COLUMNS))


def model_size(plan) -> dict:
    """Deployed model size against the original (see module docstring).

    Returns:
        ``{"model_params", "model_params_ratio", "params_stored_total", "original_params"}``.
    """
    original = sum(p.params for p in plan.profile)
    trunk = sum(p.params for s in plan.trunk for p in plan.profile[s.start:s.stop])
    deployed = []
    for d, b in enumerate(plan.branches):
        own = 0
        shape = _branch_in_shape(plan, d)
        for s in b.stages:
            profs = chunk_profiles(plan, s.blocks, shape)
            own += sum(p.params for p in profs)
            shape = profs[-1].out_shape
        if b.adapter_node:
            own += adapter_profile(plan.junction_shape()).params
        deployed.append(own)
    if plan.junction == "concat":  # the views' branches form one model together with the trunk
        model_params = sum(deployed) + trunk
    else:
        model_params = max(deployed, default=0) + trunk
    stored = sum(p.params for profs in _held(plan).values() for p in profs)
    return {"model_params": int(model_params), "model_params_ratio": model_params / original,
            "params_stored_total": int(stored), "original_params": int(original)}
