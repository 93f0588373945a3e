"""The emulated testbed's figure: predicted against measured seconds (:mod:`fplstudy.testbed.validation`'s
tables)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def parity_figure(tables: list[tuple[str, pd.DataFrame]]):
    """Predicted against measured: the round makespan (one point per plan × round) and per-node busy seconds
    (one point per plan × node × round), warm-up rounds left out; log-log, with the ±15 % band.

    Args:
        tables: ``(label, table)`` per run, each table of :data:`fplstudy.testbed.validation.TESTBED_COLUMNS`.

    Returns:
        The figure, drawn without pyplot (the caller's backend is left alone); save it with
        :func:`fplstudy.views.style.save_figure`.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.6))
    axes = fig.subplots(1, 2)
    panels = (("round makespan", "predicted_round_s", "measured_round_s", True),
              ("busy compute seconds per node", "predicted_busy_s", "measured_busy_s", False))
    for ax, (title, p, m, per_round) in zip(axes, panels):
        lo, hi = math.inf, 0.0
        for label, table in tables:
            t = table[~table["warmup"].astype(bool)]
            if per_round:
                t = t.groupby("round")[[p, m]].first()
            t = t[(t[p] > 0) & (t[m] > 0)]
            if t.empty:
                continue
            ax.scatter(t[p], t[m], s=14, alpha=0.7, label=label)
            lo, hi = min(lo, t[p].min(), t[m].min()), max(hi, t[p].max(), t[m].max())
        if hi > 0:
            xs = np.geomspace(lo / 1.5, hi * 1.5, 50)
            ax.plot(xs, xs, color="black", lw=1)
            ax.fill_between(xs, xs * 0.85, xs * 1.15, color="grey", alpha=0.2, label="±15 %")
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("predicted (s, emulated time)")
        ax.set_ylabel("measured (s, emulated time)")
        ax.set_title(title)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
