"""The figure of the profile sensitivity (DVC stage ``sensitivity``): for each cost verdict of the findings, how
far each profile number's low and high end move the pair's cost ratio, and which ends flip the verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fplstudy.study.sensitivity import SIDES

TITLES = {"energy_j": "energy (all nodes) of the fixed budget", "makespan_s": "makespan of the fixed budget",
          "energy_j_to_target": "energy (all nodes) to the target accuracy",
          "makespan_s_to_target": "makespan to the target accuracy"}


def _label(mine: pd.DataFrame, pair: tuple[str, str], table: pd.DataFrame) -> str:
    """``fpl@4 / fl`` and, below, the nominal ratio, its verdict and whether it holds across the ranges (``mine``:
    one metric's verdicts; a pair without one is marked as not compared)."""
    a, b = (table[table["name"] == n].iloc[0] for n in pair)
    head = f"{a['strategy']}@{a['nodes']} / {b['strategy']}@{b['nodes']}"
    row = mine[(mine["a"] == pair[0]) & (mine["b"] == pair[1])]
    if row.empty:
        return f"{head}\nnot compared"
    row = row.iloc[0]
    held = "holds" if row["holds"] else "FLIPS"
    return f"{head}\n{row['ratio']:.2f} {row['verdict']}, {held}"


def _cells(part: pd.DataFrame, verdicts: pd.DataFrame, numbers: list[str], pairs: list[tuple[str, str]]):
    """One metric's heat map: the largest change of each pair's ratio at each number's ends (%), the text
    ``low/high`` (% each) and the ``(row, column)`` s of the ends that flip the verdict."""
    swing = np.zeros((len(numbers), len(pairs)))
    text = np.full((len(numbers), len(pairs)), "", dtype=object)
    flips = []
    for j, (a, b) in enumerate(pairs):
        mine = part[(part["a"] == a) & (part["b"] == b)]
        found = verdicts[(verdicts["a"] == a) & (verdicts["b"] == b)]
        if found.empty:  # no seed on which both plans reached the target
            text[:, j] = "–"
            continue
        verdict = found.iloc[0]
        nominal = float(verdict["ratio"])
        flipped = set(str(verdict["flips"]).split(";")) if isinstance(verdict["flips"], str) else set()
        for i, number in enumerate(numbers):
            ends = mine[mine["number"] == number].set_index("kind")["ratio"]
            change = {side: float(ends.get(side, nominal)) / nominal for side in SIDES}
            swing[i, j] = max(abs(math.log(c)) for c in change.values())
            text[i, j] = "/".join(f"{100 * (change[side] - 1):+.0f}" for side in SIDES)
            if any(f"{number}:{side}" in flipped for side in SIDES):
                flips.append((i, j))
    return 100 * (np.exp(swing) - 1), text, flips


def figure(ratios: pd.DataFrame, verdicts: pd.DataFrame, table: pd.DataFrame):
    """One heat map per metric: a row per profile number, a column per pair; a cell's colour is the largest
    change of the pair's ratio at the number's low or high end (% of the nominal ratio), its text both changes
    (low / high), and a black frame marks an end that flips the verdict.

    Args:
        ratios: :func:`fplstudy.study.sensitivity.pair_ratios`.
        verdicts: :func:`fplstudy.study.sensitivity.verdicts`.
        table: :func:`fplstudy.study.sensitivity.reprice` (plan columns for the labels, each number's status).

    Returns:
        The figure, or None without pairs.
    """
    if verdicts.empty:
        return None
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.patches import Rectangle

    metrics = list(dict.fromkeys(verdicts["metric"]))
    numbers = list(dict.fromkeys(ratios.loc[ratios["kind"].isin(SIDES), "number"]))
    pairs = list(dict.fromkeys(zip(verdicts["a"], verdicts["b"])))
    statuses = dict(zip(table["number"], table["status"]))
    cells = {metric: _cells(ratios[ratios["metric"] == metric], verdicts[verdicts["metric"] == metric], numbers, pairs)
             for metric in metrics}
    vmax = max(float(pct.max()) for pct, _, _ in cells.values()) or 1.0  # one colour scale for every panel
    fig, axes = plt.subplots(len(metrics), 1, figsize=(1.45 * len(pairs) + 4, (0.42 * len(numbers) + 1.6) * len(metrics)),
                             squeeze=False, layout="constrained")
    for ax, metric in zip(axes[:, 0], metrics):
        pct, text, flips = cells[metric]
        mine = verdicts[verdicts["metric"] == metric]
        sns.heatmap(pct, ax=ax, cmap="rocket_r", vmin=0, vmax=vmax, annot=text, fmt="", annot_kws={"fontsize": 7},
                    cbar_kws={"label": "largest change\nof the ratio (%)"}, linewidths=0.5, linecolor="white",
                    xticklabels=[_label(mine, pair, table) for pair in pairs],
                    yticklabels=[f"{n} ({statuses.get(n, '?')})" for n in numbers])
        for i, j in flips:
            ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="black", linewidth=2.2))
        ax.set_title(f"{TITLES.get(metric, metric)}: % change of the cost ratio a / b at each number's low / high end",
                     fontsize=10)
        ax.tick_params(axis="x", labelrotation=0, labelsize=7)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle("Profile sensitivity: which numbers move (colour) and flip (framed) the cost verdicts; "
                 "(M, S, D, E, U) = each number's status")
    return fig
