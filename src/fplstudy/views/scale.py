"""Figures of the cost study at the paper's scale (DVC stage ``scale``): bytes and energy against nodes,
per-node peak memory against the devices' memory, and where FL's parameter bytes cross the activation
bytes of the other strategies."""

from __future__ import annotations

import math

import pandas as pd

from fplstudy.facts.profiles import load_profiles
from fplstudy.study.params import ScaleParams
from fplstudy.views.style import MARKERS, PALETTE, STRATEGY_ORDER


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


def draw_nodes(costs: pd.DataFrame):
    """Bytes and energy per epoch against nodes, one panel per model, one line per strategy.

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
    fig, axes = plt.subplots(2, len(models), figsize=(4.2 * len(models), 7), squeeze=False, sharex=True)
    for j, model in enumerate(models):
        data = ok[ok["model"] == model]
        for i, (col, label) in enumerate((("MB", "bytes sent per epoch (MB)"), ("kJ", "energy per epoch (kJ)"))):
            ax = axes[i][j]
            sns.lineplot(_dodge(data, "nodes", order), x="nodes_drawn", y=col, hue="strategy", style="strategy",
                         hue_order=order, style_order=order, palette=PALETTE, markers=MARKERS, dashes=False, ax=ax,
                         legend=(i == 0 and j == 0))
            ax.set(yscale="log", ylabel=label, xlabel="nodes", title=model if i == 0 else None)
            _node_axis(ax, ok["nodes"])
    fig.suptitle("One epoch at the paper's scale: bytes and energy against nodes")
    fig.tight_layout()
    return fig


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
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False, sharey=True)
    for j, model in enumerate(models):
        ax = axes[0][j]
        sns.lineplot(_dodge(peak[peak["model"] == model], "nodes", order), x="nodes_drawn", y="GB", hue="strategy",
                     style="strategy", hue_order=order, style_order=order, palette=PALETTE, markers=MARKERS,
                     dashes=False, markersize=8, ax=ax, legend=j == 0)
        for gb, names in lines.items():
            ax.axhline(gb, color="0.4", linestyle=":", linewidth=1)
            ax.annotate(f"{', '.join(names)}: {gb:g} GB", (0.98, gb), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=7, color="0.3")
        ax.set(yscale="log", xlabel="nodes", ylabel="peak memory, busiest data-owner node (GB)", title=model)
        _node_axis(ax, peak["nodes"])
    fig.suptitle(f"Per-node peak memory ({params.device} nodes) against device memory")
    fig.tight_layout()
    return fig


def draw_crossover(table: pd.DataFrame, points: pd.DataFrame, params: ScaleParams):
    """Bytes per epoch against the training-set size: FL flat, MP/SL/FPL rising; the crossover marked.

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
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False, sharey=True)
    for j, model in enumerate(models):
        ax = axes[0][j]
        sns.lineplot(data[data["model"] == model], x="train_samples", y="MB", hue="strategy", style="strategy",
                     hue_order=order, style_order=order, palette=PALETTE, markers=MARKERS, dashes=False, ax=ax,
                     legend=j == 0)
        for _, p in points[points["model"] == model].iterrows():
            if math.isfinite(p["crossover_samples"]) and p["crossover_samples"] > 0:
                ax.axvline(p["crossover_samples"], color=PALETTE[p["strategy"]], linestyle=":", linewidth=1.2)
        ax.set(xscale="log", yscale="log", xlabel="training samples (one epoch)", ylabel="bytes sent per epoch (MB)",
               title=f"{model}, {params.crossover_nodes} nodes")
    fig.suptitle("Where shipping parameters (FL) costs less than shipping activations: right of the dotted line")
    fig.tight_layout()
    return fig
