"""The study's tables: run folders read into per-seed, per-plan, per-round and per-node tables with
intervals, learning curves and the headline metrics."""

from __future__ import annotations

import json
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



def read_runs(runs: list[tuple[dict[str, Any], int, Path]]) -> dict[str, pd.DataFrame]:
    """Read run folders into tidy tables.

    Args:
        runs: ``(columns, seed, folder)`` per run; ``columns`` (plan name and settings) prefix its rows.

    Returns:
        ``seeds`` (one row per run: columns, seed, status, :data:`METRIC_KEYS`, branches),
        ``rounds`` (run × round) and ``costs`` (run × node × kind sums of the ledger).

    Raises:
        FileNotFoundError: a folder has no ``metrics.json``.
    """
    per_seed, rounds, costs = [], [], []
    for keys, seed, folder in runs:
        if not (folder / "metrics.json").is_file():
            raise FileNotFoundError(f"{keys.get('name', folder)} seed {seed}: {folder}/metrics.json missing; run "
                                    f"`dvc repro train@{keys.get('group', '<group>')}`")
        doc = json.loads((folder / "metrics.json").read_text())
        per_seed.append({**keys, "seed": seed, "status": doc["status"], **{k: doc.get(k) for k in METRIC_KEYS},
                         "branches": len(doc["plan"]["branches"])})
        rnd = pd.read_csv(folder / "rounds.csv")
        rnd = rnd[[c for c in rnd.columns if c != "run_id"]]
        rounds.append(rnd.assign(**keys, seed=seed)[[*keys, "seed", *rnd.columns]])
        led = pd.read_csv(folder / "ledger.csv")
        per = (led.groupby(["node", "role", "kind"], sort=True)[["energy_j", "bytes_tx", "bytes_rx", "flops",
                                                                   "seconds"]].sum().reset_index())
        costs.append(per.assign(**keys, seed=seed)[[*keys, "seed", *per.columns]])
    return {"seeds": pd.DataFrame(per_seed), "rounds": pd.concat(rounds, ignore_index=True),
            "costs": pd.concat(costs, ignore_index=True)}



def aggregate(study: Study, runs_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read every run of the study into tidy tables: :func:`read_runs`' ``seeds``, ``rounds`` and
    ``costs``, plus ``summary`` (one row per plan: for every metric its ``_mean``, ``_sd``,
    ``_ci_low`` and ``_ci_high`` over completed seeds — Student-t 95 % — and ``seeds``, their count).

    Raises:
        FileNotFoundError: a run of the study has no ``metrics.json`` (names the stage to run).
    """
    runs = [(plan_columns(study, p), s, d) for p, s, d in study.run_dirs(runs_dir)]
    tables = read_runs(runs)
    return {"seeds": tables["seeds"], "summary": summarize(tables["seeds"]), "rounds": tables["rounds"],
            "costs": tables["costs"]}



def summarize(seeds: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per plan: mean, sd and Student-t interval of every metric over its completed seeds."""
    rows = []
    for _name, part in seeds.groupby("name", sort=False):
        done = part[part["status"] == "completed"]
        row = {c: part.iloc[0][c] for c in seeds.columns[:seeds.columns.get_loc("seed")]}  # the plan's columns
        row.update(seeds=len(done), branches=int(part.iloc[0]["branches"]))
        for key in METRIC_KEYS:
            d = stats.describe(done[key].astype(float).to_numpy(), confidence)
            row.update({f"{key}_mean": d["mean"], f"{key}_sd": d["sd"], f"{key}_ci_low": d["ci_low"],
                        f"{key}_ci_high": d["ci_high"]})
        rows.append(row)
    return pd.DataFrame(rows)



def headline(study: Study, summary: pd.DataFrame) -> dict[str, Any]:
    """The study's headline numbers for ``dvc metrics show`` (a dozen columns, readable in a terminal;
    everything else is in ``summary.csv``): plans, seeds, completed runs, and per strategy label, at its
    reference node count (4 if swept, else the largest) on IID data, the means over seeds of the test
    accuracy, the energy (J), the bytes sent (B) and the round makespan (s), to 4 significant digits."""
    out: dict[str, Any] = {"plans": int(summary.shape[0]), "seeds": len(study.seeds),
                           "runs_completed": int(summary["seeds"].sum())}
    iid = summary[summary["partition"].isin(["iid", "features"])]
    columns = {"test_acc": "test_acc_mean_mean", "energy_j": "energy_j_mean", "bytes_total": "bytes_total_mean",
               "makespan_s": "makespan_s_mean"}
    out.update({key: {} for key in columns if columns[key] in summary})
    for name, row in reference_plans(iid).items():
        for key, column in columns.items():
            if key in out:
                value = float(row[column])
                out[key][name] = round(value, 4) if key == "test_acc" else float(f"{value:.4g}")
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
