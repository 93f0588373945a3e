"""The study's tables: run folders read into per-seed, per-plan, per-round and per-node tables with
intervals, learning curves and the headline metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fplstudy.plans.strategies import LABEL_ORDER, REGISTRY
from fplstudy.study import stats
from fplstudy.train.results import atomic_write_text, dumps_json

if TYPE_CHECKING:
    from fplstudy.study.params import Study

# Final metrics of a run (metrics.json keys), aggregated over seeds.
METRIC_KEYS = ("test_acc_mean", "test_acc_worst", "test_loss_mean", "train_loss", "rounds_completed",
               "flops_total", "bytes_total", "energy_j", "energy_j_max_node", "makespan_s",
               "memory_bytes_max_node", "model_params", "model_params_ratio", "params_stored_total")



# Metrics that are proportions: their intervals are logit intervals, inside [0, 1].
BOUNDED = ("test_acc_mean", "test_acc_worst", "best_acc", "test_acc_budget")


# The settings every summary row carries (values a group does not sweep come from train/defaults); a study that
# sweeps other keys gets a column for each of them too (:func:`study_columns`).
STUDY_COLUMNS = ("name", "group", "strategy", "nodes", "junction", "partition")


def study_columns(study: Study) -> tuple[str, ...]:
    """The columns that name a plan in every table: :data:`STUDY_COLUMNS`, then every other key a group of
    the study sweeps (e.g. ``link``, ``lr``, ``branches``), in the order the groups give them."""
    extra = [k for p in study.plans for k in p.swept if k not in STUDY_COLUMNS]
    return (*STUDY_COLUMNS, *dict.fromkeys(extra))


def plan_columns(study: Study, plan) -> dict[str, Any]:
    """One plan's values of :func:`study_columns`."""
    return {"name": plan.name, "group": plan.group, **{c: plan.column(c) for c in study_columns(study)[2:]}}



# Who a plan's nodes are (counted from the plan in metrics.json), so that plans compared at the same node
# count can be told apart: nodes that read training data, nodes that hold trunk stages and no data (servers),
# nodes that average the branches.
ROLE_COLUMNS = ("data_owners", "servers", "aggregators")

# Costs summed from round 0 to the round a run first reaches the study's target accuracy (``findings.target_acc``).
TO_TARGET_COSTS = ("flops", "bytes", "energy_j", "energy_j_per_owner", "makespan_s")


def plan_roles(plan: dict[str, Any]) -> dict[str, int]:
    """:data:`ROLE_COLUMNS` of one plan (the ``plan`` of a run's ``metrics.json``)."""
    owners = {b["data_node"] for b in plan["branches"]}
    return {"data_owners": len(owners),
            "servers": sum("trunk" in n["role"] and n["name"] not in owners for n in plan["nodes"]),
            "aggregators": sum("aggregator" in n["role"] for n in plan["nodes"])}


def cumulative_costs(ledger: pd.DataFrame, owners: set[str]) -> pd.DataFrame:
    """Per round of one run, the costs spent from round 0 up to and including it: ``cum_flops``,
    ``cum_bytes`` (sent), ``cum_energy_j`` (every node), ``cum_energy_j_per_owner`` (the data owners' energy,
    over their count) and ``cum_makespan_s`` (the rounds' makespans added)."""
    led = ledger.assign(owner_j=ledger["energy_j"].where(ledger["node"].isin(owners), 0.0))
    per = led.groupby("round", sort=True).agg(flops=("flops", "sum"), bytes=("bytes_tx", "sum"),
                                              energy_j=("energy_j", "sum"), owner_j=("owner_j", "sum"),
                                              makespan_s=("round_makespan_s", "first"))
    per["energy_j_per_owner"] = per.pop("owner_j") / max(1, len(owners))
    return per[list(TO_TARGET_COSTS)].cumsum().add_prefix("cum_").reset_index()


def to_target(rounds: pd.DataFrame, target: float) -> dict[str, Any]:
    """Rounds and costs one run spent to first reach ``target`` test accuracy (mean over branches).

    Args:
        rounds: the run's rounds with ``round``, ``test_acc_mean`` and :func:`cumulative_costs`' columns.
        target: the accuracy to reach (fraction).

    Returns:
        ``target_acc``, ``reached``, ``rounds_to_target`` (rounds run up to and including the first at or
        above the target), ``best_acc`` (the best round's accuracy) and ``<cost>_to_target`` for each of
        :data:`TO_TARGET_COSTS`; the round count and costs are NaN when the target was not reached.
    """
    hit = rounds[rounds["test_acc_mean"] >= target].sort_values("round")
    out: dict[str, Any] = {"target_acc": target, "reached": not hit.empty,
                           "best_acc": float(rounds["test_acc_mean"].max()) if len(rounds) else math.nan}
    first = hit.iloc[0] if not hit.empty else None
    out["rounds_to_target"] = int(first["round"]) + 1 if first is not None else math.nan
    for cost in TO_TARGET_COSTS:
        out[f"{cost}_to_target"] = float(first[f"cum_{cost}"]) if first is not None else math.nan
    return out


# The fixed-budget view of runs that stop at a target accuracy: accuracy and costs after the first ``budget`` rounds
# (``min_rounds``, which every run trains), so that plans are also compared at equal rounds.
BUDGET_KEYS = {"test_acc_budget": "test_acc_mean", "flops_budget": "cum_flops", "bytes_budget": "cum_bytes",
               "energy_j_budget": "cum_energy_j", "makespan_s_budget": "cum_makespan_s"}


def at_budget(rounds: pd.DataFrame, budget: int) -> dict[str, float]:
    """One run's :data:`BUDGET_KEYS` after its first ``budget`` rounds (NaN when it ran fewer: it diverged)."""
    row = rounds[rounds["round"] == budget - 1]
    return {key: float(row.iloc[0][col]) if not row.empty else math.nan for key, col in BUDGET_KEYS.items()}


def read_runs(runs: list[tuple[dict[str, Any], int, Path]], target: float | None = None,
              budget: int | None = None) -> dict[str, pd.DataFrame]:
    """Read run folders into tidy tables.

    Args:
        runs: ``(columns, seed, folder)`` per run; ``columns`` (plan name and settings) prefix its rows.
        target: the study's target accuracy; None leaves the ``_to_target`` columns out.
        budget: the fixed budget in rounds (:func:`at_budget`, :func:`budget_rounds`); None leaves the ``_budget``
            columns out.

    Returns:
        ``seeds`` (one row per run: columns, seed, status, :data:`METRIC_KEYS`, branches,
        :data:`ROLE_COLUMNS`, and with a target :func:`to_target`'s columns), ``rounds`` (run × round, with
        :func:`cumulative_costs`) and ``costs`` (run × node × kind sums of the ledger).

    Raises:
        FileNotFoundError: a folder has no ``metrics.json``.
    """
    per_seed, rounds, costs = [], [], []
    for keys, seed, folder in runs:
        if not (folder / "metrics.json").is_file():
            raise FileNotFoundError(f"{keys.get('name', folder)} seed {seed}: {folder}/metrics.json missing; run "
                                    f"`dvc repro train@{keys.get('group', '<group>')}`")
        doc = json.loads((folder / "metrics.json").read_text())
        led = pd.read_csv(folder / "ledger.csv")
        rnd = pd.read_csv(folder / "rounds.csv")
        rnd = rnd[[c for c in rnd.columns if c != "run_id"]]
        owners = {b["data_node"] for b in doc["plan"]["branches"]}
        rnd = rnd.merge(cumulative_costs(led, owners), on="round", how="left")
        row = {**keys, "seed": seed, "status": doc["status"], **{k: doc.get(k) for k in METRIC_KEYS},
               "branches": len(doc["plan"]["branches"]), **plan_roles(doc["plan"])}
        if target is not None:
            row.update(to_target(rnd, target))
        if budget is not None:
            row.update(at_budget(rnd, budget))
        per_seed.append(row)
        rounds.append(rnd.assign(**keys, seed=seed)[[*keys, "seed", *rnd.columns]])
        per = (led.groupby(["node", "role", "kind"], sort=True)[["energy_j", "bytes_tx", "bytes_rx", "flops",
                                                                   "seconds"]].sum().reset_index())
        costs.append(per.assign(**keys, seed=seed)[[*keys, "seed", *per.columns]])
    return {"seeds": pd.DataFrame(per_seed), "rounds": pd.concat(rounds, ignore_index=True),
            "costs": pd.concat(costs, ignore_index=True)}



def budget_rounds(study: Study) -> int:
    """The study's fixed budget in rounds: when its runs stop at a target accuracy (``train.stop_at_acc``), the
    ``min_rounds`` every run trains; otherwise all its rounds (the ``_budget`` columns are then the final ones)."""
    if study.train.get("stop_at_acc") is None:
        return max(p.config.rounds for p in study.plans)
    return int(study.train.get("min_rounds", 1))


def aggregate(study: Study, runs_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read every run of the study into tidy tables: :func:`read_runs`' ``seeds``, ``rounds`` and
    ``costs``, plus ``summary`` (one row per plan: for every metric its ``_mean``, ``_sd``,
    ``_ci_low`` and ``_ci_high`` over completed seeds — Student-t 95 % — and ``seeds``, their count).

    Raises:
        FileNotFoundError: a run of the study has no ``metrics.json`` (names the stage to run).
    """
    runs = [(plan_columns(study, p), s, d) for p, s, d in study.run_dirs(runs_dir)]
    tables = read_runs(runs, study.findings.get("target_acc"), budget_rounds(study))
    return {"seeds": tables["seeds"], "summary": summarize(tables["seeds"]), "rounds": tables["rounds"],
            "costs": tables["costs"]}



def summarize(seeds: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per plan: its columns, ``seeds`` (completed), ``branches``, :data:`ROLE_COLUMNS`, and the mean,
    sd and interval of every metric over its completed seeds: Student-t, or for an accuracy (a proportion) the
    logit interval (:func:`fplstudy.study.stats.logit_interval`, inside [0, 1]). With a target accuracy, also
    ``reached`` (seeds that reached it), ``best_acc`` and each ``_to_target`` cost over the seeds that reached it."""
    rows = []
    derived = [c for c in seeds.columns if c.endswith(("_to_target", "_budget")) or c == "best_acc"]
    for _name, part in seeds.groupby("name", sort=False):
        done = part[part["status"] == "completed"]
        row = {c: part.iloc[0][c] for c in seeds.columns[:seeds.columns.get_loc("seed")]}  # the plan's columns
        row.update(seeds=len(done), branches=int(part.iloc[0]["branches"]),
                   **{c: int(part.iloc[0][c]) for c in ROLE_COLUMNS if c in part})
        if "reached" in part:
            row.update(target_acc=float(part.iloc[0]["target_acc"]), reached=int(done["reached"].sum()))
        for key in (*METRIC_KEYS, *derived):
            d = stats.describe(done[key].astype(float).to_numpy(), confidence, bounded=key in BOUNDED)
            row.update({f"{key}_mean": d["mean"], f"{key}_sd": d["sd"], f"{key}_ci_low": d["ci_low"],
                        f"{key}_ci_high": d["ci_high"]})
        rows.append(row)
    return pd.DataFrame(rows)



def headline(study: Study, summary: pd.DataFrame) -> dict[str, Any]:
    """The study's headline numbers for ``dvc metrics show`` (a dozen columns, readable in a terminal;
    everything else is in ``summary.csv``): plans, seeds, completed runs, and per strategy label, at its
    reference node count (4 if swept, else the largest) on IID data, the means over seeds of the test
    accuracy, the energy (J), the bytes sent (B) and the makespan (s) of the fixed budget's rounds
    (:func:`budget_rounds`), to 4 significant digits; with a target accuracy, also the rounds and the energy
    to reach it (means over the seeds that did)."""
    out: dict[str, Any] = {"plans": int(summary.shape[0]), "seeds": len(study.seeds),
                           "runs_completed": int(summary["seeds"].sum())}
    iid = summary[summary["partition"].isin(["iid", "features"])]
    columns = {"test_acc": "test_acc_budget_mean", "energy_j": "energy_j_budget_mean",  # every plan, same rounds
               "bytes_total": "bytes_budget_mean", "makespan_s": "makespan_s_budget_mean",
               # at equal accuracy: over the seeds that reached the target (null where none did)
               "rounds_to_target": "rounds_to_target_mean", "energy_j_to_target": "energy_j_to_target_mean"}
    out.update({key: {} for key in columns if columns[key] in summary})
    for name, row in reference_plans(iid).items():
        for key, column in columns.items():
            if key in out:
                value = float(row[column])
                out[key][name] = (None if not math.isfinite(value) else
                                  round(value, 4) if key == "test_acc" else float(f"{value:.4g}"))
    return out


def reference_plans(iid: pd.DataFrame) -> dict[str, pd.Series]:
    """Per strategy label its plans at the reference node count (4 if swept, else the largest), keyed
    ``<label>@<nodes>``; where several plans share a label and node count (they differ in another swept key,
    e.g. ``link``), each is kept, keyed ``<label>@<nodes> <plan name>``: none is dropped."""
    out: dict[str, pd.Series] = {}
    labels = plan_label(iid)
    for lab in LABEL_ORDER:
        part = iid[labels == lab]
        if part.empty:
            continue
        nodes = 4 if (part["nodes"] == 4).any() else int(part["nodes"].max())
        rows = part[part["nodes"] == nodes]
        for _, row in rows.iterrows():
            out[f"{lab}@{nodes}" + (f" {row['name']}" if len(rows) > 1 else "")] = row
    return out



def plan_label(table: pd.DataFrame) -> pd.Series:
    """Legend label of each row (:data:`fplstudy.views.style.LABEL_ORDER`): the strategy, with the junction for
    fpl (``fpl-adapter``)."""
    split = table["strategy"].map(lambda s: bool(REGISTRY[s].label_junctions))  # labelled per junction
    return table["strategy"].where(~split, table["strategy"] + "-" + table["junction"].astype(str))



def variant_label(table: pd.DataFrame) -> pd.Series:
    """Legend label of each row that tells plans of one label apart: :func:`plan_label`, then the parts of the
    plan's name that are neither its strategy, node count, junction nor partition, e.g.
    ``fpl-adapter branches2-branch_stages2`` for ``fpl-8-branches2-branch_stages2-adapter-iid`` and ``fl lte`` for
    ``fl-2-lte``."""
    base = plan_label(table)
    extra = table.apply(variant, axis=1) if len(table) else pd.Series([], dtype=str)
    return base.where(extra == "", base + " " + extra)


def variant(row: pd.Series | dict) -> str:
    """The parts of a plan's name beyond its strategy, node count, junction and partition (``""`` for a plan of
    the strategy's default shape), e.g. ``branches2-branch_stages2``."""
    known = {str(row["strategy"]), str(row["nodes"]), str(row["junction"]), str(row["partition"])}
    return "-".join(t for t in str(row["name"]).split("-") if t not in known)


def curves(rounds: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Learning curves for DVC's data-driven plot: test accuracy per round (mean over seeds), one
    column per :data:`fplstudy.views.style.LABEL_ORDER` label, each at its reference node count (as
    :func:`headline`) on IID data; a label the study does not run is an empty column."""
    iid = summary[summary["partition"].isin(["iid", "features"])]
    table = pd.DataFrame(index=pd.Index(sorted(rounds["round"].unique()), name="round"))
    chosen = reference_plans(iid)
    for label in LABEL_ORDER:
        mine = {key: row for key, row in chosen.items() if key.split("@")[0] == label}
        if not mine:
            table[label] = np.nan
        for row in mine.values():  # one column per plan; a label with several plans names each
            column = label if len(mine) == 1 else f"{label} {row['name']}"
            table[column] = rounds[rounds["name"] == row["name"]].groupby("round")["test_acc_mean"].mean()
    return table.reset_index()



def write_aggregate(study: Study, tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Write ``seeds.csv``, ``summary.csv``, ``rounds.csv``, ``costs.csv``, the learning curves for DVC's
    plots (``curves.csv``) and the headline ``metrics.json`` into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    written = [atomic_write_text(out_dir / f"{name}.csv", _csv(table)) for name, table in tables.items()]
    written.append(atomic_write_text(out_dir / "curves.csv", _csv(curves(tables["rounds"], tables["summary"]))))
    written.append(atomic_write_text(out_dir / "metrics.json",
                                     dumps_json(headline(study, tables["summary"]))))
    return written



def _csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, lineterminator="\n", float_format="%.10g")
