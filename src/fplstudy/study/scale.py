"""The trade-off at the paper's scale, without the data: a cost study of large models on CIFAR-10-sized work.

Costs do not depend on the pixels: FLOPs, bytes, energy, makespan and memory follow from the model, the
input shape, the samples per node and the class counts. This module prices the six strategies for the
models of ``params.yaml``'s ``scale:`` section (VGG-11, ResNet-18, MobileNetV2) on a dataset's declared
shape (:mod:`fplstudy.costs.dryrun`; the files are read where they exist, with the same result) at each node
count, with each model's default junction (the head a data owner holds in ``sl``, ``sfl`` and ``fpl``),
and writes:

- ``costs.csv`` — one row per model × strategy × nodes: bytes per kind, energy, makespan, FLOPs and the
  largest per-node peak memory of **one epoch** (one round of one local epoch; FL and SFL average once);
  plans a strategy refuses (``mp`` with more nodes than blocks) are rows with ``status: refused``;
- ``memory.csv`` — one row per node of every priced plan: its device, its peak memory and whether it fits
  in the device's memory, and against each device of ``memory_devices``;
- ``crossover.csv`` and ``crossover_points.csv`` — bytes per epoch of FL and of each activation-shipping
  strategy over training-set sizes, and the size ``n*`` where they cross: FL's bytes (parameters up and
  down, ``2 × clients × 4 × (parameters + float buffers)``) do not depend on the samples, the others' are
  ``fixed + per_sample × n`` (activations forward, gradients back, labels), so FL ships less above ``n*``;
- figures: ``bytes_energy_vs_nodes.png``, ``memory_vs_device.png``, ``crossover.png``;
- ``findings.md`` — which of the paper's cost claims hold at this scale, each sentence computed from the
  tables.

Command line (``dvc.yaml`` stage ``scale``)::

    python -m fplstudy.stages.scale --params params.yaml --out results/scale

(the figures go beside the tables: ``figures/`` is the ``tradeoffs`` stage's output as a whole, and DVC
refuses an output inside another stage's.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.dryrun import price_plan, priced_from, shard_sizes
from fplstudy.costs.ledger import totals
from fplstudy.costs.memory import node_chunks, peak_memory
from fplstudy.facts.datasets import split_sizes
from fplstudy.facts.profiles import check_profiles, load_profiles
from fplstudy.plans.events import TRANSFER_KINDS
from fplstudy.plans.plan import resolve
from fplstudy.study.params import ScaleParams

SCALE_COLUMNS = ("model", "strategy", "nodes", "nodes_used", "branches", "junction_at", "cut_numel", "status",
                "message", "train_samples", *(f"bytes_{k}" for k in TRANSFER_KINDS), "bytes_total", "energy_j",
                "energy_j_max_node", "makespan_s", "flops_total", "memory_bytes_max_node",
                "memory_bytes_max_edge_node", "model_params", "priced_from")


# --------------------------------------------------------------------------- pricing

def _cut_numel(plan) -> int:
    """Elements per sample of the activations that cross the first cut between two nodes (0: none)."""
    chunks = node_chunks(plan, 0)
    for _node, _kind, _profs, shape, received in chunks:
        if received:
            return int(math.prod(shape))
    return 0


def price_one(values: dict[str, Any]) -> dict[str, Any]:
    """Price one plan for one epoch (dry run on the declared shape, or the files where present).

    Args:
        values: fplstudy config keys.

    Returns:
        A row of :data:`SCALE_COLUMNS` (``status`` ``refused`` with the reason for a plan the strategy
        refuses), plus ``_memory``: the plan's :func:`fplstudy.costs.memory.peak_memory` rows with devices.
    """
    row: dict[str, Any] = {"model": values.get("model"), "strategy": values["strategy"], "nodes": values["nodes"]}
    try:
        cfg = make_config(values)
        plan = resolve(cfg)
        profiles = check_profiles(plan)
        sizes = shard_sizes(plan)
    except ConfigError as exc:
        return {**row, "status": "refused", "message": str(exc)}
    ledger = price_plan(plan, sizes, profiles)
    tot = totals(plan, ledger)
    sent = ledger.groupby("kind")["bytes_tx"].sum()
    mem = peak_memory(plan)
    dev = ledger.drop_duplicates("node").set_index("node")["device"]
    mem["device"] = mem["node"].map(dev)
    mem["device_memory_bytes"] = mem["device"].map(lambda d: profiles.devices[d].memory_bytes)
    edge = mem[mem["device"] == cfg.device]
    row.update({
        "nodes_used": len(plan.nodes), "branches": len(plan.branches), "junction_at": plan.junction_at,
        "cut_numel": _cut_numel(plan), "status": "priced", "message": "", "train_samples": int(sum(sizes))
        if plan.junction != "concat" else int(sizes[0]),
        **{f"bytes_{k}": int(sent.get(k, 0)) for k in TRANSFER_KINDS},
        "bytes_total": tot["bytes_total"], "energy_j": tot["energy_j"], "energy_j_max_node": tot["energy_j_max_node"],
        "makespan_s": tot["makespan_s"], "flops_total": tot["flops_total"],
        "memory_bytes_max_node": tot["memory_bytes_max_node"],
        "memory_bytes_max_edge_node": int(edge["total_bytes"].max()) if len(edge) else 0,
        "model_params": tot["model_params"], "priced_from": priced_from(plan),
        "_memory": mem,
    })
    return row


def price_grid(params: ScaleParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every model × strategy × node count of ``params``, one epoch each.

    Returns:
        ``(costs, memory)``: :data:`SCALE_COLUMNS` rows, and one row per node of every priced plan
        (model, strategy, nodes, node, role, device, its peak memory by part, the device's memory,
        ``fits``, and ``fits_<device>`` for each of ``memory_devices``).
    """
    rows, mems = [], []
    for model in params.models:
        for strategy in params.strategies:
            for nodes in ((1,) if strategy == "centralized" else params.nodes):
                row = price_one(params.config(model=model, strategy=strategy, nodes=nodes))
                mem = row.pop("_memory", None)
                rows.append(row)
                if mem is not None:
                    mems.append(mem.assign(model=model, strategy=strategy, nodes=nodes))
    costs = pd.DataFrame(rows).reindex(columns=list(SCALE_COLUMNS))
    memory = pd.concat(mems, ignore_index=True) if mems else pd.DataFrame()
    if len(memory):
        memory["fits"] = memory["total_bytes"] <= memory["device_memory_bytes"]
        devices = load_profiles().devices
        for d in params.memory_devices:
            memory[f"fits_{d}"] = memory["total_bytes"] <= devices[d].memory_bytes
        lead = ["model", "strategy", "nodes", "node", "role", "device"]
        memory = memory[lead + [c for c in memory.columns if c not in lead]]
    return costs, memory


def crossover_grid(params: ScaleParams) -> pd.DataFrame:
    """Bytes per epoch of FL and of each of ``crossover_against`` at ``crossover_nodes`` nodes, over the
    training-set sizes ``crossover_samples`` (a seeded IID subset, ``max_train_samples``).

    Returns:
        Columns ``model`` (the reference as ``"<model> on <dataset>"``), ``strategy``, ``train_samples``, ``bytes_per_epoch``, ``bytes_params``
        (parameters up and down), ``bytes_activations`` (activations, gradients, labels); refused plans
        are left out.
    """
    cases = [(model, params.dataset, model, params.crossover_samples) for model in params.models]
    if params.crossover_reference is not None:
        dataset, model = params.crossover_reference
        full = split_sizes(dataset)[0]
        sizes = tuple(n for n in params.crossover_samples if n < full) + (full,)
        cases.append((f"{model} on {dataset}", dataset, model, sizes))
    rows = []
    for label, dataset, model, sizes in cases:
        for strategy in ("fl", *params.crossover_against):
            for n in sizes:
                r = price_one(params.config(model=model, dataset=dataset, strategy=strategy,
                                            nodes=params.crossover_nodes, partition="iid", max_train_samples=n))
                if r["status"] != "priced":
                    continue
                rows.append({"model": label, "strategy": strategy, "train_samples": r["train_samples"],
                             "bytes_per_epoch": r["bytes_total"],
                             "bytes_params": r["bytes_params_up"] + r["bytes_params_down"],
                             "bytes_activations": r["bytes_activations"] + r["bytes_gradients"] + r["bytes_labels"]})
    return pd.DataFrame(rows, columns=["model", "strategy", "train_samples", "bytes_per_epoch", "bytes_params",
                                       "bytes_activations"])


def crossover_points(table: pd.DataFrame) -> pd.DataFrame:
    """Where FL's bytes per epoch equal each other strategy's, from a :func:`crossover_grid` table.

    FL's bytes per epoch are constant in the training-set size; another strategy's are a line
    ``fixed + per_sample × n`` (through its smallest and largest size, checked at the others: a dry run's
    bytes per sample do not depend on the batching). The crossover is ``n* = (fl - fixed) / per_sample``: above
    ``n*`` samples FL ships fewer bytes, below it the activation-shipping strategy does.

    Args:
        table: columns ``model``, ``strategy`` (``fl`` among them), ``train_samples``, ``bytes_per_epoch``.

    Returns:
        One row per model × non-FL strategy: ``fl_bytes_per_epoch``, ``fixed_bytes``, ``bytes_per_sample``,
        ``crossover_samples`` (inf when FL never ships less), ``largest_samples`` (the largest size of the
        table) and ``fl_cheaper_at_largest``.

    Raises:
        ValueError: when a model has no FL rows, FL's bytes vary with the size, or a strategy has
            fewer than two sizes.
    """
    out = []
    for model, rows in table.groupby("model", sort=False):
        fl = rows[rows["strategy"] == "fl"]["bytes_per_epoch"].to_numpy(dtype=float)
        if len(fl) == 0:
            raise ValueError(f"model {model!r}: the crossover table has no fl rows; price fl too")
        if np.ptp(fl) > 0:
            raise ValueError(f"model {model!r}: fl's bytes per epoch vary with the training-set size "
                             f"({fl.min():.0f}..{fl.max():.0f}); the crossover assumes they do not")
        largest = int(rows["train_samples"].max())
        for strategy, srows in rows[rows["strategy"] != "fl"].groupby("strategy", sort=False):
            n = srows["train_samples"].to_numpy(dtype=float)
            b = srows["bytes_per_epoch"].to_numpy(dtype=float)
            if len(np.unique(n)) < 2:
                raise ValueError(f"model {model!r}, strategy {strategy!r}: the crossover needs at least two "
                                 f"training-set sizes; got {sorted(set(n.tolist()))}")
            lo, hi = int(np.argmin(n)), int(np.argmax(n))  # the line through the smallest and largest size
            slope = (b[hi] - b[lo]) / (n[hi] - n[lo])
            fixed = b[lo] - slope * n[lo]
            off = np.abs(fixed + slope * n - b)
            if off.max() > 1e-9 * max(1.0, b.max()):
                raise ValueError(f"model {model!r}, strategy {strategy!r}: bytes per epoch are not a line in the "
                                 f"training-set size (off by {off.max():.0f} B); the crossover assumes they are")
            cross = (fl[0] - fixed) / slope if slope > 0 else math.inf
            at_largest = float(b[n == largest][0]) if (n == largest).any() else fixed + slope * largest
            out.append({"model": model, "strategy": strategy, "fl_bytes_per_epoch": float(fl[0]),
                        "fixed_bytes": float(fixed), "bytes_per_sample": float(slope),
                        "crossover_samples": float(max(cross, 0.0)), "largest_samples": largest,
                        "fl_cheaper_at_largest": bool(fl[0] < at_largest)})
    return pd.DataFrame(out, columns=["model", "strategy", "fl_bytes_per_epoch", "fixed_bytes", "bytes_per_sample",
                                      "crossover_samples", "largest_samples", "fl_cheaper_at_largest"])


def compare_to_reference(model: str = "resnet18", dataset: str = "cifar10", *, reference=("digits", "cnn"),
                         nodes: int = 4, samples: Sequence[int] = (100, 1000, 10_000, 50_000),
                         against: Sequence[str] = ("mp", "sl", "fpl"), **keys: Any):
    """The crossover of one large model on a declared dataset beside a reference (the digits CNN): what the
    teaching notebook shows when it moves from the digits CNN to ResNet-18.

    Args:
        model, dataset: the large case (priced on the dataset's declared shape where its files are missing).
        reference: ``(dataset, model)`` of the small case, priced on its whole training set too.
        nodes: node count of every plan.
        samples: training-set sizes of the large case.
        against: activation-shipping strategies compared with FL.
        **keys: device, server_device, link, batch_size (the :class:`ScaleParams` fields).

    Returns:
        ``(params, table, points)``: the :class:`ScaleParams` used, :func:`crossover_grid`'s table and
        :func:`crossover_points`' rows.
    """
    params = ScaleParams(dataset=dataset, models=(model,), crossover_nodes=nodes, crossover_samples=tuple(samples),
                         crossover_against=tuple(against), crossover_reference=tuple(reference), **keys)
    table = crossover_grid(params)
    return params, table, crossover_points(table)


def reference_lesson(points: pd.DataFrame) -> str:
    """Two sentences per strategy comparing the large model with the reference (the last model of
    ``points``), computed from :func:`compare_to_reference`'s points."""
    models = list(dict.fromkeys(points["model"]))
    big, small = models[0], models[-1]
    by = points.set_index(["model", "strategy"])
    lines = []
    for strategy in dict.fromkeys(points["strategy"]):
        b, r = by.loc[(big, strategy)], by.loc[(small, strategy)]
        ratio = [(p["fixed_bytes"] + p["bytes_per_sample"] * p["largest_samples"]) / p["fl_bytes_per_epoch"]
                 for p in (b, r)]
        lines.append(f"- **{strategy.upper()} against FL.** {big}: FL ships {_mb(b['fl_bytes_per_epoch'])} per epoch, "
                     f"{strategy.upper()} {b['bytes_per_sample']:,.0f} B per sample; they cross at "
                     f"{b['crossover_samples']:,.0f} samples, and at {b['largest_samples']:,} samples FL ships "
                     f"{ratio[0]:,.1f}x {'less' if ratio[0] > 1 else 'more'}. {small}: FL "
                     f"{_mb(r['fl_bytes_per_epoch'])}, {strategy.upper()} {r['bytes_per_sample']:,.0f} B per sample, "
                     f"crossing at {r['crossover_samples']:,.0f} samples; at {r['largest_samples']:,} samples FL ships "
                     f"{ratio[1]:,.1f}x {'less' if ratio[1] > 1 else 'more'}.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- findings

def _mb(b: float) -> str:
    return f"{b / 1e6:,.1f} MB"


def scale_findings(params: ScaleParams, costs: pd.DataFrame, memory: pd.DataFrame, points: pd.DataFrame) -> str:
    """``findings.md``: which of the paper's cost claims hold at this scale, each computed from the tables."""
    n_train = split_sizes(params.dataset)[0]
    ok = costs[costs["status"] == "priced"]
    lines = [f"# Costs at the paper's scale: {', '.join(params.models)} on {params.dataset}",
             "",
             f"One epoch ({n_train:,} training samples, batch {params.batch_size}), priced without training "
             f"(dry runs on {'the declared shape' if (ok['priced_from'] == 'declared shape').any() else 'the files'} "
             f"of {params.dataset}); data owners on `{params.device}`, trunk and aggregator on "
             f"`{params.server_device}`, link `{params.link}`. Generated by `python -m fplstudy.stages.scale` from "
             f"`costs.csv`, `memory.csv` and `crossover_points.csv`.",
             "",
             "## Shipping parameters (FL) against shipping activations (MP, SL, FPL)",
             ""]
    full = {n_train} | ({split_sizes(params.crossover_reference[0])[0]} if params.crossover_reference else set())
    whole = " (the whole training set)"
    for _, p in points.iterrows():
        where = ("never (FL ships more at every size)" if not math.isfinite(p["crossover_samples"])
                 else f"above {p['crossover_samples']:,.0f} training samples")
        other = p["fixed_bytes"] + p["bytes_per_sample"] * p["largest_samples"]
        ratio = other / p["fl_bytes_per_epoch"]
        verdict = (f"FL ships {ratio:,.1f}x less" if p["fl_cheaper_at_largest"]
                   else f"{p['strategy'].upper()} ships {1 / ratio:,.1f}x less")
        lines.append(f"- {p['model']}, {params.crossover_nodes} nodes: FL ships {_mb(p['fl_bytes_per_epoch'])} per "
                     f"epoch whatever the data; {p['strategy'].upper()} ships {p['bytes_per_sample']:,.0f} B per "
                     f"sample (+ {_mb(p['fixed_bytes'])} fixed). FL is cheaper {where}; at "
                     f"{p['largest_samples']:,} samples{whole if p['largest_samples'] in full else ''} {verdict}.")
    lines += ["", "## Which strategy ships and spends least, per node count", ""]
    claims: dict[tuple[str, str], list[bool]] = {}
    for (model, nodes), rows in ok[ok["strategy"] != "centralized"].groupby(["model", "nodes"], sort=False):
        by = rows.set_index("strategy")
        best_b, best_e = by["bytes_total"].idxmin(), by["energy_j"].idxmin()
        lines.append(f"- {model}, {nodes} nodes: fewest bytes {best_b} ({_mb(by.loc[best_b, 'bytes_total'])}), "
                     f"least energy {best_e} ({by.loc[best_e, 'energy_j'] / 1e3:,.1f} kJ).")
        if "fpl" in by.index:
            for other in ("fl", "mp", "sl"):
                if other in by.index:
                    for col in ("bytes_total", "energy_j"):
                        claims.setdefault((col, other), []).append(bool(by.loc["fpl", col] < by.loc[other, col]))
    lines += ["", "## The paper's claims at this scale", "",
              "The seed paper argues that FPL, combining data and model parallelism, can cost less than either "
              "alone. Here, FPL (junction `adapter`, cut at the model's default junction) against each:", ""]
    for (col, other), held in sorted(claims.items()):
        what = "fewer bytes" if col == "bytes_total" else "less energy"
        verdict = "holds" if all(held) else "does not hold" if not any(held) else "holds in part"
        lines.append(f"- FPL needs {what} per epoch than {other.upper()}: {verdict} "
                     f"({sum(held)} of {len(held)} model × node counts).")
    fl = ok[ok["strategy"] == "fl"]
    lines.append("- FL's bytes grow with the clients and not with the data: "
                 + "; ".join(f"{m} {_mb(r['bytes_total'].min())}..{_mb(r['bytes_total'].max())} at "
                             f"{r['nodes'].min()}..{r['nodes'].max()} nodes" for m, r in fl.groupby("model", sort=False))
                 + ".")
    if len(memory):
        edge = memory[memory["device"] == params.device]
        lines += ["", "## Memory", ""]
        for d in params.memory_devices:
            col = f"fits_{d}"
            per_plan = edge.groupby(["model", "strategy", "nodes"])[col].all()
            fits = per_plan[per_plan]
            lines.append(f"- On `{d}`: {len(fits)} of {len(per_plan)} plans fit on every data-owner node"
                         + (f"; none of {', '.join(sorted({s for (_m, s, _n) in per_plan[~per_plan].index}))} "
                            f"fits everywhere" if (~per_plan).any() else "") + ".")
        mp = edge[edge["strategy"] == "mp"].groupby(["model", "nodes"])["total_bytes"].max()
        flm = edge[edge["strategy"] == "fl"].groupby(["model", "nodes"])["total_bytes"].max()
        both = mp.index.intersection(flm.index)
        if len(both):
            lower = int((mp[both] < flm[both]).sum())
            lines.append(f"- Model parallelism splits memory: MP's busiest node holds less than an FL client in "
                         f"{lower} of {len(both)} model × node counts.")
    refused = costs[costs["status"] == "refused"]
    if len(refused):
        lines += ["", "## Not priced", ""]
        lines += [f"- {r['model']} {r['strategy']} at {r['nodes']} nodes: {r['message']}" for _, r in refused.iterrows()]
    return "\n".join(lines) + "\n"
