"""Figures of the cost study at the paper's scale (DVC stage ``scale``): bytes and energy against nodes,
per-node peak memory against the devices' memory, and where FL's parameter bytes cross the activation
bytes of the other strategies."""

from __future__ import annotations

import math

import pandas as pd

from fplstudy.facts.profiles import load_profiles
from fplstudy.study.params import ScaleParams
from fplstudy.views.looks import LOOKS
from fplstudy.views.style import MARKERS, PALETTE, STRATEGY_ORDER, legend_below, strategy_handles


def _strategies(table: pd.DataFrame) -> list[str]:
    return [s for s in STRATEGY_ORDER if s in set(table["strategy"])]


def _dodge(table: pd.DataFrame, x: str, order: list[str]) -> pd.DataFrame:
    """Shift ``x`` a few per cent per strategy (log axis), so that strategies with equal costs (SL, SFL
    and FPL share the head) are all visible; the tick labels stay on the true values."""
    step = {s: 1.04 ** (i - (len(order) - 1) / 2) for i, s in enumerate(order)}
    return table.assign(**{f"{x}_drawn": table[x] * table["strategy"].map(step)})


def _node_axis(ax, nodes) -> None:
    import matplotlib.ticker

    ticks = sorted(set(int(n) for n in nodes))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([str(n) for n in ticks]))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _refusals(costs: pd.DataFrame) -> pd.DataFrame:
    """The plans the study could not build (``status`` refused), one row per model × strategy × nodes, with the
    reason: the clauses of the refusal that say why, without the config key it names or the advice (``strategy
    mp puts one stage per node and the model has only 11 blocks``)."""
    refused = costs[costs["status"] == "refused"].copy()
    clauses = refused["message"].fillna("").str.split("; ")
    refused["reason"] = clauses.map(lambda parts: "; ".join(
        c for c in parts if not c.startswith(("config key", "use "))) or "; ".join(parts))
    return refused


def _refusal_note(refused: pd.DataFrame) -> str:
    """One line per reason: which strategy, at which node counts, on which models, and why."""
    lines = []
    for (strategy, reason), rows in refused.groupby(["strategy", "reason"], sort=False):
        nodes = ", ".join(str(n) for n in sorted(set(rows["nodes"])))
        models = ", ".join(dict.fromkeys(rows["model"]))
        lines.append(f"x: no {LOOKS[strategy].short} plan at {nodes} nodes on {models} ({reason})")
    return "\n".join(lines)


def draw_nodes(costs: pd.DataFrame, params: ScaleParams | None = None):
    """Bytes and energy per epoch against nodes, one panel per model, one line per strategy; a plan the study
    refused (mp beyond the model's block count) is marked with an x where its line would go on, and the
    figure says why.

    Args:
        costs: the scale stage's ``costs.csv``.
        params: the stage's parameters, for the dataset, devices and link in the title; None leaves them out.

    Returns:
        The figure, or None without priced rows.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    ok = costs[(costs["status"] == "priced") & (costs["strategy"] != "centralized")].copy()
    if ok.empty:
        return None
    ok["MB"], ok["kJ"] = ok["bytes_total"] / 1e6, ok["energy_j"] / 1e3
    models = list(dict.fromkeys(ok["model"]))
    order = _strategies(ok)
    refused = _refusals(costs)
    fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 6.6), squeeze=False, sharex=True,
                             layout="constrained")
    for j, model in enumerate(models):
        data = _dodge(ok[ok["model"] == model], "nodes", order)
        for i, (col, label) in enumerate((("MB", "bytes sent per epoch (MB)"), ("kJ", "energy per epoch, all nodes (kJ)"))):
            ax = axes[i][j]
            sns.lineplot(data, x="nodes_drawn", y=col, hue="strategy", style="strategy",
                         hue_order=order, style_order=order, palette=PALETTE, markers=MARKERS, dashes=False, ax=ax,
                         legend=False)
            for _, row in refused[refused["model"] == model].iterrows():  # where the line would go on
                last = data[data["strategy"] == row["strategy"]].sort_values("nodes").tail(1)
                if len(last):
                    ax.plot(row["nodes"], last[col].iloc[0], marker="x", markersize=9, markeredgewidth=2,
                            color=PALETTE[row["strategy"]], linestyle="")
            ax.set(yscale="log", ylabel=label, xlabel="nodes" if i == 1 else "", title=model if i == 0 else None)
            ax.grid(True, which="major", alpha=0.3)
            _node_axis(ax, ok["nodes"])
    handles = strategy_handles(order)
    if len(refused):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="0.3", marker="x", markeredgewidth=2, linestyle="", label="no plan"))
    legend_below(fig, handles)
    lines = [f"One epoch{f' of {params.dataset} (declared shape)' if params is not None else ''} against nodes"
             + _least_everywhere(ok, models)]
    if params is not None:
        lines.append(f"{params.device} data owners, {params.server_device} server, {params.link} links")
    fig.suptitle("\n".join([*lines, *filter(None, [_refusal_note(refused)])]), fontsize=10)
    return fig


def _least_everywhere(ok: pd.DataFrame, models: list[str]) -> str:
    """``": FL sends the fewest bytes and uses the least energy at every node count"`` when one strategy is
    lowest on both in every panel at every node count, or what it is lowest on; ``""`` when none is."""
    lowest = []
    for col, what in (("MB", "sends the fewest bytes"), ("kJ", "uses the least energy")):
        least = {ok.loc[group[col].idxmin(), "strategy"] for _, group in ok.groupby(["model", "nodes"])}
        if len(least) == 1:
            lowest.append((least.pop(), what))
    if not lowest or len({s for s, _ in lowest}) > 1:
        return ""
    scope = "every node count" if len(models) == 1 else "every node count, on every model"
    return f": {LOOKS[lowest[0][0]].short} {' and '.join(w for _, w in lowest)} at {scope}"


def draw_memory(memory: pd.DataFrame, params: ScaleParams):
    """The largest per-node peak memory on a data-owner node against nodes, with each device's memory.

    Returns:
        The figure, or None without rows.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    edge = memory[memory["device"] == params.device] if len(memory) else memory
    if edge is None or len(edge) == 0:
        return None
    peak = edge.groupby(["model", "strategy", "nodes"], as_index=False)["total_bytes"].max()
    peak["GB"] = peak["total_bytes"] / 1e9
    models = [m for m in params.models if m in set(peak["model"])]
    order = _strategies(peak)
    devices = load_profiles().devices
    lines: dict[float, list[str]] = {}  # device memory (GB) -> devices with it
    for d in params.memory_devices:
        lines.setdefault(devices[d].memory_bytes / 1e9, []).append(d)
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 4.4), squeeze=False, sharey=True,
                             layout="constrained")
    for j, model in enumerate(models):
        ax = axes[0][j]
        sns.lineplot(_dodge(peak[peak["model"] == model], "nodes", order), x="nodes_drawn", y="GB", hue="strategy",
                     style="strategy", hue_order=order, style_order=order, palette=PALETTE, markers=MARKERS,
                     dashes=False, markersize=8, ax=ax, legend=False)
        for gb, names in lines.items():
            ax.axhline(gb, color="0.4", linestyle=":", linewidth=1)
            ax.annotate(f"{', '.join(names)}: {gb:g} GB", (0.98, gb), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=7, color="0.3")
        ax.set(yscale="log", xlabel="nodes", ylabel="peak memory, busiest data-owner node (GB)" if j == 0 else "",
               title=model)
        ax.grid(True, which="major", alpha=0.3)
        _node_axis(ax, peak["nodes"])
    legend_below(fig, strategy_handles(order))
    largest = peak["GB"].max()
    smallest = min(lines) if lines else None
    verdict = (f"every plan fits the smallest device ({largest:.2g} GB at most, against {smallest:g} GB)"
               if smallest is not None and largest <= smallest else f"the largest peak is {largest:.2g} GB")
    fig.suptitle(f"Peak memory of the busiest data-owner node ({params.device}) against nodes, {params.dataset} "
                 f"(declared shape), batch {params.batch_size}\n{verdict}; dotted: each device's memory",
                 fontsize=10)
    return fig


_CROSS_LINES = (":", "--", "-.", (0, (5, 1, 1, 1, 1, 1)))  # one line style per strategy compared with FL


def draw_crossover(table: pd.DataFrame, points: pd.DataFrame, params: ScaleParams):
    """Bytes per epoch against the training-set size: FL flat, MP/SL/FPL rising. Each strategy's crossover,
    the training-set size above which FL sends fewer bytes than it, is a vertical line in the strategy's colour
    and a line style of its own, named at its top and in the panel's legend with its size.

    Returns:
        The figure, or None without rows.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if table.empty:
        return None
    data = table.assign(MB=table["bytes_per_epoch"] / 1e6)
    models = list(dict.fromkeys(data["model"]))
    order = _strategies(data)
    against = [s for s in order if s in set(points["strategy"])]
    style = {s: _CROSS_LINES[i % len(_CROSS_LINES)] for i, s in enumerate(against)}
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 4.6), squeeze=False, sharey=True,
                             layout="constrained")
    for j, model in enumerate(models):
        ax = axes[0][j]
        sns.lineplot(data[data["model"] == model], x="train_samples", y="MB", hue="strategy", style="strategy",
                     hue_order=order, style_order=order, palette=PALETTE, markers=MARKERS, dashes=False, ax=ax,
                     legend=False, alpha=0.8)
        ax.set(xscale="log", yscale="log")
        crossings, named = [], []  # named: (axes fraction, level) of each name drawn
        lo, hi = (math.log(v) for v in ax.get_xlim())
        for _, p in points[points["model"] == model].sort_values("crossover_samples").iterrows():
            at, name = p["crossover_samples"], LOOKS[p["strategy"]].short
            if not (math.isfinite(at) and at > 0):
                continue
            crossings.append(ax.axvline(at, color=PALETTE[p["strategy"]], linestyle=style[p["strategy"]],
                                        linewidth=1.8, label=f"{name} above {at:,.0f} samples"))
            frac = (math.log(at) - lo) / (hi - lo)
            level = next(k for k in range(len(named) + 1)  # lower than a name that would touch it
                         if all(abs(frac - f) > 0.06 or k != lev for f, lev in named))
            named.append((frac, level))
            ax.annotate(name, (at, 0.98 - 0.16 * level), xycoords=("data", "axes fraction"), xytext=(-2, 0),
                        textcoords="offset points", rotation=90, ha="right", va="top", fontsize=8,
                        fontweight="bold", color=PALETTE[p["strategy"]])
        if crossings:  # below the panel: off the data
            ax.legend(handles=crossings, loc="upper center", bbox_to_anchor=(0.5, -0.17), fontsize=7,
                      title="FL sends fewer bytes than", title_fontsize=7, handlelength=3.5)
        where = model if " on " in model else f"{model} on {params.dataset}"
        ax.set(xlabel="training samples (one epoch)",
               ylabel="bytes sent per epoch (MB)" if j == 0 else "", title=f"{where}, {params.crossover_nodes} nodes")
        ax.grid(True, which="major", alpha=0.3)
    legend_below(fig, strategy_handles(order))
    fig.suptitle("Bytes per epoch against the training-set size: FL ships parameters (flat), the others activations "
                 "(rising)\nEach vertical line, in a strategy's colour and named at its top: the size above which FL "
                 "sends fewer bytes than that strategy", fontsize=10)
    return fig
