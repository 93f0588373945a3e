"""The study's figures read without the text: point labels that do not overlap, stacked bars that do not
touch the frame, accuracy intervals cut at 1 (and said so). Drawn from the committed study's tables."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from fplstudy.views import figures as plots

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "results"
pytestmark = pytest.mark.skipif(not (RESULTS / "seeds.csv").is_file(), reason="no committed study tables")


def _label_boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return ax, [t.get_window_extent(renderer) for t in ax.texts]


@pytest.mark.parametrize("x, y, maximize", [("energy_j", "test_acc_mean", True), ("bytes_total", "test_acc_mean", True),
                                            ("energy_j", "makespan_s", False)])
def test_point_labels_do_not_overlap_and_stay_inside(x, y, maximize):
    seeds = pd.read_csv(RESULTS / "seeds.csv")
    fig = plots.tradeoff(seeds, x, y, maximize_y=maximize)
    ax, boxes = _label_boxes(fig)
    assert boxes  # the front's plans (one, where one plan beats all) and the 0-byte reference are labelled
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    frame = ax.get_window_extent()
    title, whole = ax.title.get_window_extent(), fig.bbox
    assert whole.x0 <= title.x0 and title.x1 <= whole.x1 and title.y1 <= whole.y1, (title, whole)  # not cut off
    assert all(frame.y0 - 1 <= b.y0 and b.y1 <= frame.y1 + 1 for b in boxes)  # not into the title
    if y == "test_acc_mean":
        assert ax.get_ylim()[1] <= 1.01 + 1e-9  # an accuracy axis never shows values above 1
    matplotlib.pyplot.close(fig)


def test_place_labels_moves_a_label_off_another():
    fig, ax = matplotlib.pyplot.subplots()
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    plots.place_labels(ax, [("first plan", 5, 5), ("second plan", 5.01, 5.01), ("third plan", 5.02, 5)])
    _, boxes = _label_boxes(fig)
    assert len(boxes) == 3 and not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    matplotlib.pyplot.close(fig)


def test_stacked_bars_do_not_touch_the_frame():
    costs = pd.read_csv(RESULTS / "costs.csv")
    plans = sorted(costs["name"].unique())[:4]
    fig = plots.node_costs(costs, plans)
    for row, value, scale in ((0, "energy_j", 1.0), (1, "bytes_tx", 1e-6)):
        part = costs[costs["name"].isin(plans)]
        seeds = part.groupby("name")["seed"].nunique()
        stacks = part.groupby(["name", "node"])[value].sum() * scale
        tallest = max(stacks[name].max() / seeds[name] for name in plans)
        top = fig.axes[row * len(plans)].get_ylim()[1]
        assert top >= tallest * 1.05, (row, top, tallest)
    matplotlib.pyplot.close(fig)
