"""The figure of the dropout sweep (DVC stage ``dynamics``): accuracy, energy and makespan against the
dropout rate, one line per strategy, with the tables' intervals."""

from __future__ import annotations

import pandas as pd

from fplstudy.study.stats import errorbar
from fplstudy.views.style import MARKERS, PALETTE


def figure(seeds: pd.DataFrame, confidence: float):
    """Accuracy, energy and makespan against the dropout rate, one line per strategy, the tables' intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns


    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
    for ax, (metric, label) in zip(axes, [("test_acc_mean", "test accuracy"), ("energy_j", "energy (J, all nodes)"),
                                          ("makespan_s", "makespan (s)")]):
        sns.pointplot(data=seeds, x="dropout", y=metric, hue="strategy", ax=ax, errorbar=errorbar(confidence),
                      palette={s: PALETTE[s] for s in seeds["strategy"].unique()}, markers=[
                          MARKERS[s] for s in seeds["strategy"].unique()], dodge=0.3, capsize=0.1)
        ax.set(xlabel="dropout probability per edge node and round", ylabel=label)
        if metric != "test_acc_mean":
            ax.set_yscale("log")  # mp's costs fall by orders of magnitude as its rounds are lost
        if ax is not axes[0]:
            ax.get_legend().remove()
    fig.suptitle(f"{len(seeds['seed'].unique())} seeds, {confidence:.0%} t-intervals")
    return fig
