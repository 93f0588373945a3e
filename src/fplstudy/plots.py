"""Figures of the study (seaborn on matplotlib), one function per figure, each returning the Figure.

Inputs are the tidy tables written by :mod:`fplstudy.study` (``summary``, ``rounds``, ``costs``).
Every axis label carries its unit; colours come from seaborn's colour-blind-safe palette, and
markers repeat the colour coding so the figures also read in greyscale.
:func:`save_figure` writes PNGs that are byte-identical across identical runs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; notebooks still show the returned figures inline
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from fplstudy.study import pareto_front  # noqa: E402

STRATEGY_ORDER = ("centralized", "mp", "fl", "sl", "sfl", "fpl")
PALETTE = dict(zip(STRATEGY_ORDER, sns.color_palette("colorblind", len(STRATEGY_ORDER))))
MARKERS = dict(zip(STRATEGY_ORDER, ("*", "s", "o", "^", "v", "D")))
KIND_ORDER = ("forward", "backward", "activations", "gradients", "labels", "params_up", "params_down", "idle")
KIND_PALETTE = dict(zip(KIND_ORDER, sns.color_palette("colorblind", len(KIND_ORDER))))
DPI = 150  # fixed, so the PNG bytes do not depend on the matplotlib rc of the machine
LABELS = {
    "test_acc_mean": "test accuracy (mean over branches, fraction)",
    "energy_j": "total energy (J)",
    "bytes_total": "total bytes sent (B)",
    "makespan_s": "makespan of the training (s)",
}


def _label(plan: pd.DataFrame) -> pd.Series:
    """Legend label of each plan: the strategy, with the junction for fpl."""
    return plan["strategy"].where(plan["strategy"] != "fpl", "fpl-" + plan["junction"])


def tradeoff(summary: pd.DataFrame, x: str, y: str, *, maximize_y: bool = False, logx: bool = True):
    """Scatter of all plans on two metrics, Pareto front marked (lower ``x`` and lower/higher ``y``).

    Args:
        summary: ``summary.csv`` (completed plans are drawn).
        x, y: metric columns.
        maximize_y: the front prefers higher ``y`` (accuracy) instead of lower.
        logx: log-scale ``x`` (costs span orders of magnitude).

    Returns:
        The figure.
    """
    data = summary[summary["status"] == "completed"].reset_index(drop=True)
    front = data[pareto_front(data, x, y, maximize_y=maximize_y)].sort_values(x)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for strategy in STRATEGY_ORDER:
        part = data[data["strategy"] == strategy]
        if part.empty:
            continue
        ax.scatter(part[x], part[y], s=25 + 12 * part["nodes"], color=PALETTE[strategy],
                   marker=MARKERS[strategy], edgecolor="black", linewidth=0.4, alpha=0.85, label=strategy)
    ax.step(front[x], front[y], where="post", color="black", linewidth=1, linestyle="--",
            label="Pareto front")
    ax.scatter(front[x], front[y], s=160, facecolor="none", edgecolor="black", linewidth=1)
    for _, row in front.iterrows():
        ax.annotate(row["name"], (row[x], row[y]), textcoords="offset points", xytext=(6, -10), fontsize=7)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))
    ax.set_title(f"{LABELS.get(y, y).split(' (')[0]} vs {LABELS.get(x, x).split(' (')[0]} "
                 f"(marker size = nodes)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def node_costs(costs: pd.DataFrame, plans: list[str]):
    """Per-node energy and bytes sent, stacked by kind of work, one column of panels per plan.

    Args:
        costs: ``costs.csv`` (plan × node × kind sums).
        plans: plan names to draw, left to right.

    Returns:
        The figure (top row energy in J, bottom row bytes sent in MB).
    """
    fig, axes = plt.subplots(2, len(plans), figsize=(2.6 * len(plans) + 1.5, 6.5), squeeze=False,
                             sharey="row")
    for col, name in enumerate(plans):
        part = costs[costs["name"] == name]
        for row, (value, scale, unit) in enumerate((("energy_j", 1.0, "energy (J)"),
                                                    ("bytes_tx", 1e-6, "bytes sent (MB)"))):
            ax = axes[row, col]
            table = part.pivot_table(index="node", columns="kind", values=value, aggfunc="sum", fill_value=0.0)
            table = table.reindex(columns=[k for k in KIND_ORDER if k in table.columns]) * scale
            table = table.loc[:, (table != 0).any(axis=0)]
            bottom = pd.Series(0.0, index=table.index)
            for kind in table.columns:
                ax.bar(table.index, table[kind], bottom=bottom, color=KIND_PALETTE[kind], label=kind,
                       edgecolor="black", linewidth=0.3)
                bottom = bottom + table[kind]
            ax.tick_params(axis="x", labelrotation=90, labelsize=7)
            if col == 0:
                ax.set_ylabel(unit)
            if row == 0:
                ax.set_title(name, fontsize=9)
            else:
                ax.set_xlabel("node")
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_PALETTE[k]) for k in KIND_ORDER
               if k in set(costs[costs["name"].isin(plans)]["kind"])]
    labels = [k for k in KIND_ORDER if k in set(costs[costs["name"].isin(plans)]["kind"])]
    fig.legend(handles, labels, loc="center right", fontsize=8, title="kind")
    fig.suptitle("Per-node energy and bytes sent over the whole training, by kind of work")
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    return fig


def learning_curves(rounds: pd.DataFrame, nodes: int):
    """Test accuracy per round for every plan at ``nodes`` nodes (centralized as reference), one
    panel per data partition.

    Returns:
        The figure.
    """
    data = rounds[(rounds["nodes"] == nodes) | (rounds["strategy"] == "centralized")].copy()
    data["plan"] = _label(data)
    data["data"] = data["partition"].replace({"features": "iid"})  # concat: every branch sees every sample
    order = [p for p in ("centralized", "mp", "fl", "sl", "sfl", "fpl-shared", "fpl-adapter", "fpl-concat")
             if p in set(data["plan"])]
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    grid = sns.relplot(data=data, x="round", y="test_acc_mean", hue="plan", hue_order=order, style="plan",
                       style_order=order, col="data", col_order=[c for c in ("iid", "dirichlet")
                                                                 if c in set(data["data"])],
                       kind="line", markers=True, dashes=False, palette=palette, height=4, aspect=1.1)
    grid.set_axis_labels("round", LABELS["test_acc_mean"])
    grid.set_titles(f"{nodes} nodes, {{col_name}} data")
    for ax in grid.axes.flat:
        ax.grid(True, alpha=0.3)
    return grid.figure


def model_size(summary: pd.DataFrame):
    """Deployed model size relative to the original model, per fpl junction mode and node count.

    Returns:
        The figure.
    """
    data = summary[(summary["strategy"] == "fpl")].drop_duplicates(["junction", "nodes"])
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.barplot(data=data, x="nodes", y="model_params_ratio", hue="junction",
                hue_order=[j for j in ("shared", "adapter", "concat") if j in set(data["junction"])],
                palette="colorblind", edgecolor="black", ax=ax)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel("edge nodes")
    ax.set_ylabel("deployed parameters / original parameters (ratio)")
    ax.set_title("Model-size overhead of the junction modes (fpl)")
    low = min(0.95, float(data["model_params_ratio"].min()) - 0.02)
    ax.set_ylim(low, float(data["model_params_ratio"].max()) * 1.02)
    fig.tight_layout()
    return fig


def non_iid(summary: pd.DataFrame):
    """Accuracy on IID vs Dirichlet shards, per strategy (fpl per junction) and node count.

    Returns:
        The figure.
    """
    data = summary[summary["partition"].isin(["iid", "dirichlet"]) & (summary["status"] == "completed")].copy()
    data["plan"] = _label(data)
    paired = data.groupby(["plan", "nodes"])["partition"].transform("nunique") == 2
    data = data[paired]
    order = [p for p in ("fl", "sl", "sfl", "fpl-shared", "fpl-adapter") if p in set(data["plan"])]
    grid = sns.catplot(data=data, x="plan", y="test_acc_mean", hue="partition", hue_order=["iid", "dirichlet"],
                       col="nodes", order=order, kind="bar", palette="colorblind", edgecolor="black",
                       height=4, aspect=0.9)
    grid.set_axis_labels("strategy", LABELS["test_acc_mean"])
    grid.set_titles("{col_name} nodes")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    grid.figure.suptitle("Effect of non-IID (Dirichlet) data on accuracy")
    grid.figure.tight_layout(rect=(0, 0, 0.9, 1))  # keep the right margin for the legend
    return grid.figure


def run_overview(rounds: pd.DataFrame, ledger: pd.DataFrame, title: str = ""):
    """One run at a glance: test accuracy per round, and energy per node stacked by kind.

    Args:
        rounds: the run's rounds table.
        ledger: the run's priced ledger.
        title: figure title (the plan name).

    Returns:
        The figure.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(rounds["round"], rounds["test_acc_mean"], marker="o", label="mean over branches")
    left.plot(rounds["round"], rounds["test_acc_worst"], marker="v", linestyle="--", label="worst branch")
    left.set_xlabel("round")
    left.set_ylabel("test accuracy (fraction)")
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)
    table = ledger.pivot_table(index="node", columns="kind", values="energy_j", aggfunc="sum", fill_value=0.0)
    table = table.reindex(columns=[k for k in KIND_ORDER if k in table.columns])
    table.plot.bar(stacked=True, ax=right, color=[KIND_PALETTE[k] for k in table.columns], edgecolor="black",
                   linewidth=0.3)
    right.set_xlabel("node")
    right.set_ylabel("energy (J)")
    right.legend(fontsize=7, title="kind")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Save ``fig`` as a PNG with a fixed dpi and no software/version metadata (same bytes on every
    identical run), creating the folder.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path

from fplstudy.planfig import draw_plan, plan_graph  # noqa: E402,F401  (the plan picture lives in planfig)
