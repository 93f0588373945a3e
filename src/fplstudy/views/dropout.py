"""The figure of the dropout sweep (DVC stage ``dynamics``): accuracy, energy and makespan against the
dropout rate, one line per strategy, with the tables' intervals (logit for accuracy, geometric for costs)."""

from __future__ import annotations

import pandas as pd

from fplstudy.study.stats import errorbar
from fplstudy.views.style import MARKERS, PALETTE


def figure(seeds: pd.DataFrame, confidence: float, where: str = ""):
    """Accuracy, energy and makespan against the dropout rate, one line per strategy: the mean over seeds with
    the tables' intervals (logit for accuracy, inside [0, 1]; geometric for the costs, above 0 on their log axes).

    Args:
        seeds: the sweep's seeds table.
        confidence: the intervals' level.
        where: the site the sweep ran on, for the title (e.g. the topology's name).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), layout="constrained")
    panels = [("test_acc_mean", "test accuracy (fraction)", errorbar(confidence, bounded=True)),
              ("energy_j", "energy, all nodes (J, log scale)", errorbar(confidence, positive=True)),
              ("makespan_s", "makespan (s, log scale)", errorbar(confidence, positive=True))]
    for ax, (metric, label, bar) in zip(axes, panels):
        sns.pointplot(data=seeds, x="dropout", y=metric, hue="strategy", ax=ax, errorbar=bar,
                      palette={s: PALETTE[s] for s in seeds["strategy"].unique()}, markers=[
                          MARKERS[s] for s in seeds["strategy"].unique()], dodge=0.3, capsize=0.1)
        ax.set(xlabel="dropout probability per edge node and round", ylabel=label)
        ax.grid(True, axis="y", alpha=0.3)
        if metric == "test_acc_mean":
            ax.set_ylim(0, 1.02)
        else:
            ax.set_yscale("log")  # mp's costs fall by orders of magnitude as its rounds are lost
        if ax is not axes[0]:
            ax.get_legend().remove()
    site = f" on {where}" if where else ""
    top = float(seeds["dropout"].max())
    mean = seeds.groupby(["strategy", "dropout"])["test_acc_mean"].mean()
    kept = ", ".join(f"{s} {mean[(s, top)] - mean[(s, 0.0)]:+.2f}" for s in seeds["strategy"].unique()
                     if (s, top) in mean.index and (s, 0.0) in mean.index)
    fig.suptitle(f"Dropout{site}: accuracy at {top:g} minus at 0, {kept}. Mean over {len(seeds['seed'].unique())} "
                 f"seeds, {confidence:.0%} intervals (logit for accuracy, geometric for costs)", fontsize=10)
    return fig
