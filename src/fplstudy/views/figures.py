"""Figures of the study (seaborn on matplotlib), one function per figure, each returning the Figure,
or None when the study has no data for it (the caller skips it with a note; never a crash).

Inputs are the tidy tables written by :mod:`fplstudy.study.params`: ``seeds`` (one row per plan × seed),
``summary`` (one row per plan), ``rounds`` and ``costs``. Intervals are the tables' 95 % intervals over
seeds, drawn by seaborn's own ``errorbar`` machinery: Student-t (:func:`fplstudy.study.stats.t_interval`), and
for accuracies the logit interval (:func:`fplstudy.study.stats.logit_interval`, inside [0, 1]). Every axis label carries its unit; colours come from seaborn's
colour-blind-safe palette, one colour per strategy label (fpl per junction), and markers repeat the
coding so the figures also read in greyscale. This module never chooses matplotlib's backend:
notebooks show the returned figures inline, :func:`save_figure` writes PNGs that are byte-identical
across identical runs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd
import seaborn as sns
import seaborn.objects as so

from fplstudy.config import JUNCTIONS
from fplstudy.costs.search import pareto_front
from fplstudy.plans.events import KINDS
from fplstudy.plans.strategies import REGISTRY
from fplstudy.study import stats
from fplstudy.study.tables import variant_label
from fplstudy.views.style import (  # noqa: F401
    KIND_PALETTE,
    LABEL_MARKERS,
    LABEL_ORDER,
    LABEL_PALETTE,
    MARKERS,
    PALETTE,
    STRATEGY_ORDER,
    legend_below,
    save_figure,
    variant_styles,
)

CI = stats.errorbar(0.95)
ACC_CI = stats.errorbar(0.95, bounded=True)  # accuracies: the logit interval, inside [0, 1]
LABELS = {
    "test_acc_mean": "test accuracy (mean over branches, fraction)",
    "energy_j": "total energy (J)",
    "bytes_total": "total bytes sent (MB)",
    "makespan_s": "makespan of the training (s)",
}
LABELS.update({  # the fixed budget of runs that stop at a target accuracy: their first min_rounds rounds
    "test_acc_budget": "test accuracy at the fixed budget (mean over branches, fraction)",
    "energy_j_budget": "energy of the fixed budget's rounds (J)",
    "bytes_budget": "bytes sent in the fixed budget's rounds (MB)",
    "makespan_s_budget": "makespan of the fixed budget's rounds (s)",
})
SCALE = {"bytes_total": 1e-6, "bytes_budget": 1e-6}  # bytes are drawn in MB
BOUNDED = {"test_acc_mean": 1.0, "test_acc_budget": 1.0}  # metrics that cannot exceed a bound (an interval above it is cut at the frame)


def _iid(table: pd.DataFrame) -> pd.DataFrame:
    """Completed rows on IID data (``features``: the concat junction, where every branch sees every sample)."""
    keep = table["partition"].isin(["iid", "features"])
    if "status" in table:
        keep &= table["status"] == "completed"
    out = table[keep].copy()
    out["label"] = variant_label(out)  # plans of one label that differ in another swept key are told apart
    return out


def tradeoff(seeds: pd.DataFrame, x: str, y: str, *, maximize_y: bool = False):
    """Every plan on two metrics (IID data): the mean over seeds with its 95 % interval on ``y``,
    marker size = nodes, and the Pareto front of the means (dashed).

    Args:
        seeds: ``seeds.csv``.
        x, y: metric columns (x drawn on a log scale; costs span orders of magnitude).
        maximize_y: the front prefers higher ``y`` (accuracy) instead of lower.

    Returns:
        The figure, or None without data. Plans with ``x`` = 0 (centralized sends no bytes) cannot sit on
        a log axis: they are drawn as a dotted horizontal reference line instead.
    """
    data = _iid(seeds)
    if data.empty:
        return None
    sx, sy = SCALE.get(x, 1.0), SCALE.get(y, 1.0)
    data = data.assign(**{x: data[x] * sx, y: data[y] * sy})
    data["x_plan"] = data.groupby("name")[x].transform("mean")  # one x per plan: its mean over seeds
    means = data.groupby(["name", "label", "nodes"], as_index=False)[["x_plan", y]].mean()
    zero = means[means["x_plan"] <= 0]
    drawn, means = data[data["x_plan"] > 0], means[means["x_plan"] > 0]
    order, palette, markers = variant_styles(drawn["label"])
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    sizes = sorted(drawn["nodes"].unique())
    size_of = {n: 5 + 6 * i / max(1, len(sizes) - 1) for i, n in enumerate(sizes)}  # marker diameter (pt)
    (so.Plot(drawn, x="x_plan", y=y, color="label", marker="label", pointsize="nodes")
     .add(so.Range(linewidth=1.2), so.Est(errorbar=CI), group="name", legend=False)
     .add(so.Dot(edgecolor="black", edgewidth=0.4), so.Agg(), group="name", legend=False)
     .scale(x="log", color=so.Nominal({k: palette[k] for k in order}, order=order),
            marker=so.Nominal({k: markers[k] for k in order}, order=order),
            pointsize=so.Nominal(size_of, order=sizes))
     .on(ax).plot())
    handles = [plt.Line2D([], [], color=palette[k], marker=markers[k], linestyle="", markersize=7,
                          markeredgecolor="black", markeredgewidth=0.4, label=k) for k in order]
    handles += [plt.Line2D([], [], color="grey", marker="o", linestyle="", markersize=size_of[n],
                           label=f"{n} node{'s' if n > 1 else ''}") for n in sizes]
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="plan / size")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 0.5, 2, 300: no 10^x notation
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(  # label the minor ticks 2 and 5 only
        lambda v, _: f"{v:g}" if f"{v:e}"[0] in "25" else ""))
    for _, row in zero.iterrows():
        ax.axhline(row[y], color=palette.get(row["label"], "grey"), linestyle=":", linewidth=1.2)
    front = means[pareto_front(means, ["x_plan", y], maximize=[y] if maximize_y else [])].sort_values("x_plan")
    ax.step(front["x_plan"], front[y], where="post", color="black", linewidth=1, linestyle="--")
    cut = ""
    if y in BOUNDED and ax.get_ylim()[1] > BOUNDED[y]:  # a t-interval of few seeds can pass the bound
        ax.set_ylim(top=BOUNDED[y] + 0.01)
        cut = f"; intervals cut at {BOUNDED[y]:g}"
    ax.set_xlabel(LABELS.get(x, x) + ", mean over seeds")
    ax.set_ylabel(LABELS.get(y, y))
    lone = " (one plan beats all: a front of one point)" if len(front) == 1 else ""
    ax.set_title(f"{LABELS.get(y, y).split(' (')[0]} vs {LABELS.get(x, x).split(' (')[0]}, IID data\n"
                 f"mean and 95 % interval over {data['seed'].nunique()} seeds{cut}\n"
                 f"dashed: Pareto front of the means{lone}", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    unit = LABELS.get(x, x).split('(')[-1].rstrip(')')
    labels = [(f"{row['name']} (0 {unit}, not on the log axis)", None, row[y]) for _, row in zero.iterrows()]
    labels += [(row["name"], row["x_plan"], row[y]) for _, row in front.iterrows()]
    place_labels(ax, labels)
    return fig


def place_labels(ax, labels: list[tuple[str, float | None, float]], fontsize: float = 7) -> None:
    """Annotate points so that no two labels overlap: each label goes to the first of a few offsets
    (above, below, further up, further down …) whose box overlaps no label placed before it.

    Args:
        ax: axes whose limits and position are final (call after ``tight_layout``).
        labels: ``(text, x, y)`` in data coordinates; x None = at the left edge of the axes (a reference
            line's label).
    """
    scale = ax.figure.dpi / 72.0  # points -> pixels
    char_w, line_h = 0.55 * fontsize * scale, 1.25 * fontsize * scale
    placed: list[tuple[float, float, float, float]] = []
    offsets = [(6, 5), (6, -11), (6, 15), (6, -21), (6, 25), (6, -31), (6, 35), (6, -41)]
    left = ax.transAxes.transform((0.01, 0))[0]
    bottom, top = ax.transAxes.transform((0, 0))[1], ax.transAxes.transform((0, 1))[1]
    for text, x, y in labels:
        px, py = ax.transData.transform((x if x is not None else 1.0, y))
        if x is None:
            px = left
        width = char_w * len(text)
        for dx, dy in (offsets if x is not None else [(0, 3), (0, -11), (0, 13)]):
            x0, y0 = px + dx * scale, py + dy * scale
            box = (x0, y0, x0 + width, y0 + line_h)
            inside = bottom <= box[1] and box[3] <= top  # not into the title or the tick labels
            if inside and not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        xy, coords = ((0.01, y), ("axes fraction", "data")) if x is None else ((x, y), "data")
        ax.annotate(text, xy, xycoords=coords, xytext=(dx, dy), textcoords="offset points", fontsize=fontsize)


# What each kind of work means in a legend, with the units it is drawn in (compute and waiting spend energy only;
# a message also sends bytes).
KIND_NAMES = {"forward": "forward pass (J)", "backward": "backward pass (J)", "activations": "activations sent (J, MB)",
              "gradients": "gradients sent (J, MB)", "labels": "labels sent (J, MB)",
              "params_up": "parameters to the aggregator (J, MB)", "params_down": "parameters from the aggregator (J, MB)",
              "relay": "messages relayed (J, MB)", "idle": "idle, waiting (J)"}
# The role of a node under its name: it reads the training data, holds trunk stages and no data (a server), holds
# a later stage of a branch, or averages the branches (fplstudy.study.tables.plan_roles counts the same roles).
ROLE_CODES = {"D": "data owner", "S": "server (trunk stage, no data)", "B": "later branch stage (no data)",
              "A": "aggregator"}
NODE_COSTS_WIDTH = 8.5  # inches of panels side by side before the next pair of rows (about 1400 px with the margins)


def role_code(role: str, headless: bool) -> str:
    """The :data:`ROLE_CODES` of a node from its ledger ``role`` (``branch0/stage0``, ``trunk/stage1``,
    ``trunk/stage0+aggregator``, ``aggregator``): ``D``, ``S``, ``B``, ``A`` or a holder that also aggregates
    (``S+A``).

    Args:
        role: the ``role`` column of ``costs.csv``.
        headless: the plan has no branch (``mp``): its first trunk stage reads the data.
    """
    holds, _, extra = role.partition("+")
    if holds == "aggregator":
        return "A"
    part, _, stage = holds.partition("/")
    if stage == "stage0" and (part.startswith("branch") or headless):
        code = "D"
    else:
        code = "S" if part == "trunk" else "B"
    return code + ("+A" if extra == "aggregator" else "")


def node_costs(costs: pd.DataFrame, plans: list[str]):
    """Per-node energy and bytes sent (mean over seeds), stacked by kind of work, one column per plan; under each
    node its role (:data:`ROLE_CODES`).

    Args:
        costs: ``costs.csv`` (plan × seed × node × kind sums).
        plans: plan names to draw, left to right, as many a row as fit :data:`NODE_COSTS_WIDTH` (each node about
            0.17 inch), then the next pair of rows.

    Returns:
        The figure (energy in J above bytes sent in MB; ``fig.axes`` holds every plan's energy panel, then every
        plan's bytes panel), or None without data.
    """
    costs = costs[costs["name"].isin(plans)]
    if costs.empty:
        return None
    plans = [p for p in plans if p in set(costs["name"])]
    seeds = costs.groupby("name")["seed"].nunique()
    width = max(1.15, 0.17 * costs.groupby("name")["node"].nunique().max() + 0.3)  # inches a panel
    cols = max(1, min(len(plans), int(NODE_COSTS_WIDTH // width)))
    blocks = -(-len(plans) // cols)
    fig = plt.figure(figsize=(width * cols + 0.9, 4.4 * blocks + 1.2), layout="constrained")
    grid = fig.add_gridspec(2 * blocks, cols)
    axes = [[], []]  # energy panels, bytes panels
    for row in (0, 1):
        for i in range(len(plans)):
            first = axes[row][0] if axes[row] else None
            axes[row].append(fig.add_subplot(grid[2 * (i // cols) + row, i % cols], sharey=first))
    tops = [0.0, 0.0]  # tallest stack per row
    used: set[str] = set()  # role codes drawn
    for col, name in enumerate(plans):
        part = costs[costs["name"] == name]
        roles = part.groupby("node")["role"].first()
        headless = not roles.str.startswith("branch").any()
        codes = [role_code(r, headless) for r in roles]
        used.update(c for code in codes for c in code.split("+"))
        for row, (value, scale, unit) in enumerate((("energy_j", 1.0, "energy per node (J)"),
                                                    ("bytes_tx", 1e-6, "bytes sent per node (MB)"))):
            ax = axes[row][col]
            table = part.astype({value: float}).pivot_table(index="node", columns="kind", values=value, aggfunc="sum",
                                                       fill_value=0.0)
            table = table.reindex(columns=[k for k in KINDS if k in table.columns]) * scale / seeds[name]
            table = table.loc[:, (table != 0).any(axis=0)]
            bottom = pd.Series(0.0, index=table.index)
            for kind in table.columns:
                ax.bar(table.index, table[kind], bottom=bottom, color=KIND_PALETTE[kind], edgecolor="black",
                       linewidth=0.3)
                bottom = bottom + table[kind]
            ax.set_xticks(range(len(roles)), [f"{n}\n{code}" for n, code in zip(roles.index, codes)],
                          rotation=0, fontsize=7)
            ax.tick_params(axis="x", labelbottom=row == 1, length=2)
            ax.tick_params(axis="y", labelleft=col % cols == 0, labelsize=7)
            tops[row] = max(tops[row], float(bottom.max()) if len(bottom) else 0.0)
            if col % cols == 0:
                ax.set_ylabel(unit, fontsize=8)
            ax.grid(True, axis="y", alpha=0.3)
            if row == 0:
                first = part.iloc[0]
                label = variant_label(part.head(1)).iloc[0].replace(" ", "\n")
                ax.set_title(f"{label}\n{first['nodes']} nodes, {first['partition']}",
                             fontsize=8)
    for row, top in enumerate(tops):
        axes[row][0].set_ylim(0, top * 1.08 if top > 0 else 1.0)  # the tallest stack does not touch the frame
    kinds = [k for k in KINDS if k in set(costs["kind"])]
    legend_below(fig, [plt.Rectangle((0, 0), 1, 1, facecolor=KIND_PALETTE[k], edgecolor="black", linewidth=0.3,
                                     label=KIND_NAMES[k]) for k in kinds], ncols=min(len(kinds), 3),
                 title="kind of work (energy in the upper row, bytes sent in the lower)")
    fig.suptitle("Where the energy and the bytes go: per node over the whole training, by kind of work, mean over "
                 f"{int(seeds.max())} seeds\nunder each node its role: "
                 + ", ".join(f"{c} {ROLE_CODES[c]}" for c in ROLE_CODES if c in used), fontsize=9)
    return fig


def learning_curves(rounds: pd.DataFrame, nodes: int):
    """Test accuracy per round for every plan at ``nodes`` nodes (centralized as reference), one
    panel per data partition; line: mean over seeds, band: 95 % interval.

    Returns:
        The figure, or None without data.
    """
    one_node = [s.name for s in REGISTRY.values() if s.fixed_nodes == 1]  # centralized: in every panel
    data = rounds[(rounds["nodes"] == nodes) | rounds["strategy"].isin(one_node)].copy()
    if data.empty:
        return None
    data["plan"] = variant_label(data)
    data["data"] = data["partition"].replace({"features": "iid"})  # concat: every branch sees every sample
    order, palette, markers = variant_styles(data["plan"])
    grid = sns.relplot(data=data, x="round", y="test_acc_mean", hue="plan", hue_order=order, style="plan",
                       style_order=order, col="data", col_order=[c for c in ("iid", "dirichlet")
                                                                 if c in set(data["data"])],
                       kind="line", markers=markers, dashes=True, errorbar=ACC_CI,
                       palette=palette,
                       height=4, aspect=1.1)
    grid.set_axis_labels("round", LABELS["test_acc_mean"])
    grid.set_titles(f"{nodes} nodes, {{col_name}} data")
    for ax in grid.axes.flat:
        ax.grid(True, alpha=0.3)
    same = "".join(f" ({s.name} trains exactly as {s.trains_as}: their lines coincide)" for s in REGISTRY.values()
                   if s.trains_as is not None and {s.name, s.trains_as} <= set(order))
    grid.figure.suptitle(f"Learning curves: mean over seeds, band 95 % logit interval{same}", fontsize=9)
    grid.figure.tight_layout(rect=(0, 0, 0.85, 1))
    return grid.figure


TO_ACCURACY = {"cum_makespan_s": "makespan spent so far (s, log scale)",
               "cum_energy_j": "energy spent so far, every node (J, log scale)",
               "cum_bytes": "bytes sent so far (MB, log scale)"}


def to_accuracy(rounds: pd.DataFrame, cost: str, target: float | None = None):
    """Test accuracy against the cost spent to reach it (time-to-accuracy, energy-to-accuracy), for every plan on
    IID data, one panel per node count: each point is a round (its cost summed from round 0; on IID data the same
    on every seed), line the mean accuracy over seeds, band its 95 % logit interval; the dashed line is the
    study's target accuracy.

    Args:
        rounds: ``rounds.csv`` with the cumulative cost columns (:func:`fplstudy.study.tables.cumulative_costs`).
        cost: one of :data:`TO_ACCURACY`.
        target: the study's ``findings.target_acc``; None draws no line.

    Returns:
        The figure, or None without data.
    """
    if cost not in rounds:
        return None
    data = _iid(rounds)
    if data.empty:
        return None
    data = data.assign(x=data[cost] * (1e-6 if cost == "cum_bytes" else 1.0))
    order, palette, markers = variant_styles(data["label"])
    nodes = sorted(int(n) for n in data["nodes"].unique())
    grid = sns.relplot(data=data, x="x", y="test_acc_mean", hue="label", hue_order=order, style="label",
                       style_order=order, col="nodes", col_order=nodes, kind="line",
                       markers=markers, dashes=True, errorbar=ACC_CI,
                       estimator="mean", palette=palette, height=3.6, aspect=1.0,
                       facet_kws={"sharex": True, "sharey": True})
    grid.set(xscale="log")
    grid.set_axis_labels(TO_ACCURACY[cost], LABELS["test_acc_mean"])
    for ax, n in zip(grid.axes.flat, nodes):
        ax.set_title(f"{n} node{'s' if n > 1 else ''}, IID data")
        ax.grid(True, alpha=0.3)
        if target is not None:
            ax.axhline(target, color="black", linestyle="--", linewidth=0.8)
    grid.figure.suptitle(f"Accuracy against {cost.removeprefix('cum_').split('_')[0]} spent: one point per round, "
                         f"mean over seeds, band 95 % logit interval"
                         + (f"; dashed: target {target:g}" if target is not None else ""), fontsize=9)
    sns.move_legend(grid, "center left", bbox_to_anchor=(0.74, 0.5), title="plan", fontsize=8)
    grid.figure.tight_layout(rect=(0, 0, 0.74, 0.95))
    return grid.figure


def model_size_bars(summary: pd.DataFrame):
    """Deployed-model size increase of each fpl junction mode, per node count (%; 0 = the original).

    Returns:
        The figure, or None without fpl plans.
    """
    fpl = REGISTRY["fpl"]  # the strategy whose plans differ by junction (its junction_looks)
    data = summary[summary["strategy"] == fpl.name].drop_duplicates(["junction", "nodes"]).copy()
    if data.empty:
        return None
    data["increase_pct"] = 100 * (data["model_params_ratio_mean"] - 1)
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    order = [j for j in JUNCTIONS if j in set(data["junction"])]
    sns.barplot(data=data, x="nodes", y="increase_pct", hue="junction", hue_order=order,
                palette={j: LABEL_PALETTE[f"{fpl.name}-{j}"] for j in fpl.label_junctions},
                edgecolor="black", ax=ax)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("edge nodes")
    ax.set_ylabel("deployed parameters beyond the original (%)")
    most = data.groupby("junction")["increase_pct"].max()
    growth = ", ".join(f"{j} {'+0' if most[j] <= 0 else f'up to +{most[j]:.2g}'} %" for j in order)
    fig.suptitle(f"Deployed model size of fpl's junction modes beyond the original model:\n{growth}\n"
                 "(one value per plan: no seed changes it)", fontsize=10)
    ax.margins(y=0.15)
    ax.grid(True, axis="y", alpha=0.3)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), title="junction", fontsize=8)
    return fig


def non_iid(seeds: pd.DataFrame):
    """Accuracy on IID vs Dirichlet shards, per plan (strategy, fpl per junction, and any swept variant) and node
    count: mean over seeds with its 95 % logit interval, at the fixed budget when runs stop at a target. Points,
    not bars: the differences are a few points of accuracy near the top of the scale.

    Returns:
        The figure, or None when no plan ran on both partitions.
    """
    data = seeds[seeds["partition"].isin(["iid", "dirichlet"]) & (seeds["status"] == "completed")].copy()
    if data.empty:
        return None
    y = "test_acc_budget" if "test_acc_budget" in data else "test_acc_mean"
    data["plan"] = variant_label(data)
    paired = data.groupby(["plan", "nodes"])["partition"].transform("nunique") == 2
    data = data[paired]
    if data.empty:
        return None
    order, _, _ = variant_styles(data["plan"])
    grid = sns.catplot(data=data, x="plan", y=y, hue="partition", hue_order=["iid", "dirichlet"],
                       col="nodes", order=order, kind="point", errorbar=ACC_CI, palette="colorblind",
                       dodge=0.35, linestyle="none", markers=["o", "s"], capsize=0.1, height=4, aspect=1.1,
                       err_kws={"linewidth": 1.2})
    grid.set_axis_labels("plan", "test accuracy (fraction)")  # the title says which
    for ax, n in zip(grid.axes.flat, grid.col_names):
        ax.set_title(f"{n} nodes")
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelrotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    when = " at the fixed budget" if y == "test_acc_budget" else ""
    grid.figure.suptitle(f"Non-IID (Dirichlet) against IID data, same plan: test accuracy{when}, mean over seeds, "
                         f"95 % logit interval", fontsize=10)
    grid.figure.tight_layout(rect=(0, 0, 0.88, 1))  # keep the right margin for the legend
    return grid.figure


def run_overview(rounds: pd.DataFrame, costs: pd.DataFrame, title: str = ""):
    """Runs at a glance: test accuracy per round per plan (mean over seeds, band 95 % interval), and
    the energy per node stacked by kind (one plan) or the total energy per plan (several).

    Args:
        rounds: the runs' rounds (:func:`fplstudy.study.params.read_runs`), with ``name`` and ``seed``.
        costs: their per-node costs, same columns.
        title: figure title.

    Returns:
        The figure.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    sns.lineplot(data=rounds, x="round", y="test_acc_mean", hue="name", errorbar=CI, marker="o", ax=left)
    left.set_xlabel("round")
    left.set_ylabel("test accuracy (mean over branches, fraction)")
    left.legend(fontsize=7, title="plan")
    left.grid(True, alpha=0.3)
    seeds = costs["seed"].nunique()
    if costs["name"].nunique() == 1:
        table = costs.pivot_table(index="node", columns="kind", values="energy_j", aggfunc="sum", fill_value=0.0)
        table = table.reindex(columns=[k for k in KINDS if k in table.columns]) / seeds
        table.plot.bar(stacked=True, ax=right, color=[KIND_PALETTE[k] for k in table.columns], edgecolor="black",
                       linewidth=0.3)
        right.set_xlabel("node")
        right.legend(fontsize=7, title="kind")
    else:
        total = costs.groupby(["name", "seed"], as_index=False)["energy_j"].sum()
        sns.barplot(data=total, y="name", x="energy_j", errorbar=CI, color="#999999", edgecolor="black", ax=right)
        right.set_ylabel("plan")
        right.tick_params(axis="y", labelsize=7)
    right.set_xlabel(right.get_xlabel() if costs["name"].nunique() == 1 else "total energy (J)")
    if costs["name"].nunique() == 1:
        right.set_ylabel("energy (J), mean over seeds")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def setting(study) -> str:
    """What a study's figures were measured on, in one line: dataset and model, the devices and link (or the
    site) that price them, and the seeds; every value any plan uses, so a sweep over one of them shows it."""
    from fplstudy.facts.models import DATASET_DEFAULT_MODEL

    configs = [plan.for_seed(study.seeds[0]) for plan in study.plans]

    def values(key: str) -> str:
        return ", ".join(sorted({str(v) for c in configs if (v := getattr(c, key, None)) is not None}))

    models = ", ".join(sorted({c.model or DATASET_DEFAULT_MODEL.get(c.dataset, "its default model") for c in configs}))
    priced = (f"site {values('topology')}" if values("topology") else
              f"data owners {values('device')}, servers {values('server_device')}, link {values('link')}")
    return f"{values('dataset')}, {models}; {priced}; {len(study.seeds)} seeds"


def publish(fig, path: str | Path, what: str, setting: str | None = None) -> str:
    """Save ``fig`` (:func:`save_figure`) and say so, or say that the study has no data for ``what``.

    ``setting`` (:func:`setting`) is written in a strip under the saved PNG, so it never meets what the figure's
    own layout placed (legends below the axes included)."""
    if fig is None:
        return f"skipped {Path(path).name}: this study has no data for {what}"
    written = save_figure(fig, path)
    if setting:
        _add_strip(written, setting)
    return f"wrote {written}"


def _add_strip(path: Path, line: str) -> None:
    """Append a strip holding ``line`` (small grey text, centred) under the PNG ``path``, in place."""
    import io
    import os

    from PIL import Image

    from fplstudy.views.style import DPI

    image = Image.open(path)
    image.load()
    strip_fig = plt.figure(figsize=(image.width / DPI, 0.25), dpi=DPI)
    strip_fig.text(0.5, 0.5, line, ha="center", va="center", fontsize=7, color="0.3")
    buf = io.BytesIO()
    strip_fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(strip_fig)
    strip = Image.open(buf).convert(image.mode)
    whole = Image.new(image.mode, (image.width, image.height + strip.height), "white")
    whole.paste(image, (0, 0))
    whole.paste(strip.crop((0, 0, image.width, strip.height)), (0, image.height))
    tmp = path.with_name(f".{path.name}.tmp")
    whole.save(tmp, format="png")
    os.replace(tmp, path)


from fplstudy.views.planfig import draw_plan, plan_graph  # noqa: E402,F401  (the plan picture lives in planfig)
