"""Figures read at a glance: legends off the data, every crossover line named, the per-node figure at notebook
width with horizontal labels and each node's role, titles inside the figure. Drawn from the committed tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from fplstudy.study.params import load_scale
from fplstudy.views import figures, scale
from fplstudy.views.looks import LOOKS
from fplstudy.views.style import DPI

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "results"
needs = pytest.mark.skipif(not (RESULTS / "scale" / "costs.csv").is_file() or not (RESULTS / "costs.csv").is_file(),
                           reason="no committed tables")


def _table(name: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / name)


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _legends(fig):
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]


def _assert_legends_off_the_data(fig):
    renderer = _drawn(fig)
    legends = _legends(fig)
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (legend, ax.get_title())
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0, box  # not cut off


def _assert_titles_inside(fig):
    renderer = _drawn(fig)
    texts = [t for t in (fig._suptitle, *(ax.title for ax in fig.axes)) if t is not None and t.get_text()]
    assert texts
    for text in texts:
        box = text.get_window_extent(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (text.get_text(), box)


@pytest.fixture(scope="module")
def params():
    return load_scale(ROOT / "params.yaml")


@needs
def test_scale_figures_keep_legends_and_titles_off_the_data(params):
    for fig in (scale.draw_nodes(_table("scale/costs.csv"), params),
                scale.draw_memory(_table("scale/memory.csv"), params),
                scale.draw_crossover(_table("scale/crossover.csv"), _table("scale/crossover_points.csv"), params)):
        _assert_legends_off_the_data(fig)
        _assert_titles_inside(fig)
        plt.close(fig)


@needs
def test_every_crossover_line_is_named_and_told_apart(params):
    points = _table("scale/crossover_points.csv")
    fig = scale.draw_crossover(_table("scale/crossover.csv"), points, params)
    for ax, model in zip(fig.axes, dict.fromkeys(points["model"])):
        mine = points[points["model"] == model]
        vertical = [line for line in ax.get_lines() if len(set(line.get_xdata())) == 1]
        assert len(vertical) == len(mine)
        labels = [line.get_label() for line in vertical]
        for strategy in mine["strategy"]:
            assert sum(LOOKS[strategy].short in label.split() for label in labels) == 1, (model, labels)
        assert len({str(line.get_linestyle()) for line in vertical}) == len(vertical)  # each its own style
        names = {t.get_text() for t in ax.texts}
        assert {LOOKS[s].short for s in mine["strategy"]} <= names
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sorted(legend) == sorted(labels)
    title = fig._suptitle.get_text()
    assert "dotted line" not in title and "vertical line" in title
    plt.close(fig)


@needs
def test_refused_plans_are_marked_and_explained(params):
    costs = _table("scale/costs.csv")
    refused = costs[costs["status"] == "refused"]
    if refused.empty:
        pytest.skip("the committed scale study refused no plan")
    fig = scale.draw_nodes(costs, params)
    title = fig._suptitle.get_text()
    for _, row in refused.iterrows():
        assert f"no {LOOKS[row['strategy']].short} plan at" in title and str(row["nodes"]) in title
        assert row["model"] in title
    marked = [line for ax in fig.axes for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(marked) == 2 * len(refused)  # bytes and energy panel of each refused plan
    assert all(line.get_xdata()[0] in set(refused["nodes"]) for line in marked)
    plt.close(fig)


@needs
@pytest.mark.parametrize("nodes", [4, 8])
def test_node_costs_fits_a_notebook_and_marks_roles(nodes):
    summary, costs = _table("summary.csv"), _table("costs.csv")
    plans = list(summary[(summary["nodes"] == nodes) & summary["partition"].isin(["iid", "features"])]["name"])
    fig = figures.node_costs(costs, plans)
    width = fig.get_figwidth() * DPI
    assert 900 <= width <= 1400, width
    _assert_legends_off_the_data(fig)
    _assert_titles_inside(fig)
    kinds = set(costs[costs["name"].isin(plans)]["kind"])
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {figures.KIND_NAMES[k] for k in kinds}
    renderer = _drawn(fig)
    bytes_axes = fig.axes[len(plans):]
    for name, ax in zip(plans, bytes_axes):
        ticks = ax.get_xticklabels()
        roles = costs[costs["name"] == name].groupby("node")["role"].first()
        assert [t.get_text().split("\n")[0] for t in ticks] == list(roles.index)
        for tick, role in zip(ticks, roles):
            assert tick.get_rotation() == 0
            code = tick.get_text().split("\n")[1]
            assert ("A" in code.split("+")) == ("aggregator" in role)
        boxes = [t.get_window_extent(renderer) for t in ticks]
        assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), name  # neighbours do not touch
    plt.close(fig)


@pytest.mark.parametrize("role, headless, code", [("branch2/stage0", False, "D"), ("branch0/stage1", False, "B"),
                                                  ("trunk/stage0", True, "D"), ("trunk/stage1", True, "S"),
                                                  ("trunk/stage0+aggregator", False, "S+A"),
                                                  ("aggregator", False, "A")])
def test_role_codes(role, headless, code):
    assert figures.role_code(role, headless) == code


@needs
def test_model_size_title_inside_the_figure():
    fig = figures.model_size_bars(_table("summary.csv"))
    _assert_titles_inside(fig)
    _assert_legends_off_the_data(fig)
    plt.close(fig)
